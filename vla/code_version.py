"""Which code produced a result: the git commit of the checkout ``vla`` runs from, else its version.

Benchmarks and evaluation reports record it, so that a number can be traced to the code that made
it. It is read afresh at every call, not cached: with an editable install, code edited while a long
benchmark runs reaches its later steps, and the benchmark says so (vla.benchmark).
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

# The checkout an editable install imports from; for an installed wheel this is site-packages.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def code_version(root: Path = PACKAGE_ROOT) -> str:
    """``<commit>`` (12 hex digits) of the git checkout at ``root``, with ``+dirty`` when tracked
    files differ from it; ``vla <version>`` when ``root`` is no checkout (an installed wheel) or git
    cannot be run."""
    # Only a checkout rooted exactly here counts: site-packages inside some other repository must
    # not report that repository's commit.
    if (root / ".git").exists():
        try:
            commit = _git(root, "rev-parse", "--short=12", "HEAD")
            changed = _git(root, "status", "--porcelain", "--untracked-files=no")
            return commit + ("+dirty" if changed else "")
        except (OSError, subprocess.SubprocessError):
            pass  # no git on the PATH, or a damaged checkout: fall back to the version
    return f"vla {_package_version()}"


def _git(root: Path, *args: str) -> str:
    # --no-optional-locks: `git status` must not take the index lock from a user's git command.
    done = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(root), *args],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _package_version() -> str:
    try:
        return metadata.version("vla")
    except metadata.PackageNotFoundError:
        return "unknown"
