#!/usr/bin/env bash
# Build or reuse the virtual environment at .venv with every extra (lerobot, metaworld, warp, dev).
#
# The environment is keyed by a hash of the dependency files (pyproject.toml, requirements.lock) and
# the Python version. It lives in $VLA_VENV_CACHE (default ~/.cache/vla/venvs) and .venv links to it,
# so a fresh clone on the same machine reuses it, and any change to the dependency files builds a new
# one. VLA_VENV_CACHE=off builds .venv in place instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
EXTRAS="lerobot,metaworld,warp,dev"

if ! "$PYTHON" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))'; then
    echo "setup: vla needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi

# Headless MuJoCo rendering needs EGL (Mesa); install it where it is missing and we may.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing EGL/Mesa for headless rendering"
        apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
    else
        echo "setup: warning: libEGL.so.1 not found; install libegl1 libgl1-mesa-dri for rendering" >&2
    fi
fi

py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# The key covers what decides the installed packages: the lock file and the project's declared
# requirements (not the rest of pyproject.toml, so editing lint settings does not rebuild 8 GB).
declared=$("$PYTHON" -c 'import json, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(json.dumps([p.get("requires-python"), p.get("dependencies"), p.get("optional-dependencies")], sort_keys=True))')
key=$( (cat requirements.lock; echo "$declared") | sha256sum | cut -c1-16)-py$py_version
# The editable install of this clone is redone whenever pyproject.toml (entry points...) or the clone moves.
editable_key=$( (cat pyproject.toml; pwd) | sha256sum | cut -c1-16)

build_venv() {  # $1: where
    local target=$1
    echo "setup: building the environment in $target (first time for these dependency files: several minutes)"
    rm -rf "$target"
    "$PYTHON" -m venv "$target"
    "$target/bin/python" -m pip install -q --upgrade "pip>=24"
    # The lock pins every package; the project's own requirements are resolved against it.
    "$target/bin/python" -m pip install -q -c requirements.lock -e ".[$EXTRAS]"
    echo "$key" >"$target/.vla-deps-key"
}

if [ "${VLA_VENV_CACHE:-}" = "off" ]; then
    if [ ! -f .venv/.vla-deps-key ] || [ "$(cat .venv/.vla-deps-key)" != "$key" ]; then
        [ -L .venv ] && rm .venv
        build_venv "$PWD/.venv"
    fi
else
    cache_root=${VLA_VENV_CACHE:-$HOME/.cache/vla/venvs}
    mkdir -p "$cache_root"
    venv="$cache_root/$key"
    exec 9>"$cache_root/.lock"
    flock 9  # two clones setting up at once share one build
    if [ ! -f "$venv/.vla-deps-key" ]; then
        build_venv "$venv"
    fi
    # Each set-up stamps the environment it uses. Environments are several GB each: beyond the two
    # most recently used, one unused for a week is removed. Never by build time: another clone
    # (another branch) may be running from an older build right now.
    touch "$venv/.vla-last-used"
    ls -1t "$cache_root"/*-py*/.vla-last-used 2>/dev/null | tail -n +3 | while read -r stamp; do
        if [ -n "$(find "$stamp" -mtime +7)" ]; then rm -rf "$(dirname "$stamp")"; fi
    done
    if [ -e .venv ] && [ ! -L .venv ]; then
        echo "setup: .venv is a directory, not the cached environment; remove it or set VLA_VENV_CACHE=off" >&2
        exit 1
    fi
    ln -sfn "$venv" .venv
    # The environment may have been built from another clone: point the editable install here.
    if [ "$(cat .venv/.vla-editable-key 2>/dev/null)" != "$editable_key" ]; then
        if ! .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >.venv/.vla-editable.log 2>&1; then
            cat .venv/.vla-editable.log >&2
            exit 1
        fi
        echo "$editable_key" >.venv/.vla-editable-key
    fi
fi
echo "setup: environment ready (.venv, $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
