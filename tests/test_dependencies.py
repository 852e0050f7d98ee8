"""Declared dependencies tell the truth: every third-party package the code imports is declared, and
every declared one is imported (or is listed below with the reason it is not imported by name)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Declared but never imported by name, each for a reason its pyproject.toml comment gives.
NOT_IMPORTED_BY_NAME = {
    "tensorboard",  # torch.utils.tensorboard needs it
    "imageio-ffmpeg",  # imageio's ffmpeg plugin writes the evaluation videos
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path, extras_too: bool) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    if extras_too:  # the optional runtime extras; dev tools are not imported by the package
        requirements += [
            r for extra, rs in project.get("optional-dependencies", {}).items() if extra != "dev" for r in rs
        ]
    return {_normalized(re.split(r"[\s\[<>=!~;@]", r, maxsplit=1)[0]) for r in requirements}


def _imported(package: Path) -> set[str]:
    """The distributions providing every third-party top-level module imported under ``package``."""
    ours = {"vla", "vla_client"}
    modules: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    third_party = modules - ours - set(sys.stdlib_module_names) - {"__future__"}
    providers = packages_distributions()
    missing = sorted(m for m in third_party if m not in providers)
    assert not missing, f"imported modules no installed distribution provides: {missing}"
    return {_normalized(dist) for module in third_party for dist in providers[module]}


def test_the_client_declares_exactly_what_it_imports() -> None:
    declared = _declared(ROOT / "client" / "pyproject.toml", extras_too=False)
    assert _imported(ROOT / "client" / "vla_client") == declared == {"numpy", "msgpack", "websockets"}


def test_vla_declares_what_it_and_the_client_it_carries_import() -> None:
    declared = _declared(ROOT / "pyproject.toml", extras_too=True)
    imported = _imported(ROOT / "vla") | _imported(ROOT / "client" / "vla_client")
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == NOT_IMPORTED_BY_NAME, "declared but not imported"
