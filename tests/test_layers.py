"""The layers of docs/ARCHITECTURE.md: who may import whom, no cycles, and what stays unimported.

The import graph is read from the source with ``ast`` (module-level and function-level imports
alike, so a lazy import inside a function is an arrow too); what a process really imports is checked
in fresh subprocesses.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vla"

# The shared layer below train/, policies/, evaluation/ and deploy/ (docs/ARCHITECTURE.md).
SHARED = ("vla.checkpoint", "vla.checkpoint_guard", "vla.inputs", "vla.policy_spec", "vla.devices")
APPLICATIONS = ("vla.train", "vla.policies", "vla.evaluation", "vla.deploy", "vla.interop")
# unit -> the units it must never import, at any depth of its own modules.
FORBIDDEN: dict[str, set[str]] = {
    **{unit: set(APPLICATIONS) for unit in SHARED},
    "vla.policies": {"vla.train", "vla.evaluation", "vla.deploy"},
    "vla.evaluation": {"vla.train", "vla.deploy"},
    "vla.interop": {"vla.train", "vla.policies", "vla.evaluation", "vla.deploy"},
    "vla.train": {"vla.deploy", "vla.policies"},
    "vla.data": set(APPLICATIONS),
}
# The one arrow from training to evaluation: the `vla train` command hands the evaluator to the loop.
ALLOWED_MODULE_EDGES = {("vla.train.cli", "vla.evaluation")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every project module ``path`` imports, wherever the import statement stands."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from vla.train import checkpoint`` imports the module vla.train.checkpoint.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        yield from (name for name in names if name == "vla" or name.startswith("vla."))


def _unit(module: str) -> str:
    """The layer unit of a module: its top-level subpackage or module under vla."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _existing(name: str, modules: set[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (names may end in a function)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _module_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        targets = {_existing(name, modules) for name in _imports(path)}
        graph[_module_name(path)] = {t for t in targets if t is not None and t != "vla"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_reader_sees_function_level_and_aliased_imports() -> None:
    graph = _module_graph()
    assert "vla.policies.runtime" in graph["vla.policies.sources"]  # imported inside a function
    assert "vla.checkpoint" in graph["vla.policies.runtime"]  # `from vla import checkpoint as ckpt`
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, targets in _module_graph().items():
        for target in targets:
            if (module, _unit(target)) in ALLOWED_MODULE_EDGES:
                continue
            if _unit(target) in FORBIDDEN.get(_unit(module), set()):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(sorted(wrong))


def test_train_policies_evaluation_deploy_and_interop_form_no_cycle() -> None:
    units = set(APPLICATIONS)
    graph: dict[str, set[str]] = {unit: set() for unit in units}
    for module, targets in _module_graph().items():
        if _unit(module) in units:
            graph[_unit(module)] |= {
                _unit(t) for t in targets if _unit(t) in units and _unit(t) != _unit(module)
            }
    assert _cycle(graph) is None, f"import cycle between packages: {' -> '.join(_cycle(graph) or [])}"
    # The shared layer is acyclic on its own too (its modules import one another downwards only).
    shared = {m: {t for t in ts if t in SHARED} for m, ts in _module_graph().items() if m in SHARED}
    assert _cycle(shared) is None


def test_project_modules_are_imported_by_name_never_by_a_string() -> None:
    """An import by module-name string is an arrow no reader of the imports sees. The one exception:
    env suites are plugins named by module path (spawned env workers import what the parent registered)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in {"importlib.import_module", "import_module", "__import__"}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert [where for where in found if not where.startswith("vla/envs/registry.py:")] == []


def _imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def _training_modules(modules: set[str]) -> list[str]:
    training = ("vla.train", "vla.data.dataset", "vla.data.loader", "vla.data.sampler", "vla.evaluation")
    return sorted(m for m in modules if m.startswith(training))


def test_importing_the_policy_runtime_imports_no_training_code() -> None:
    modules = _imported_after("import vla.policies")
    assert not _training_modules(modules)
    assert "torch" not in modules and "torch.utils.data" not in modules


def test_loading_a_policy_imports_no_training_code(untrained_checkpoint: Path) -> None:
    modules = _imported_after(
        f"import vla.policies\npolicy = vla.policies.load_policy({str(untrained_checkpoint)!r}, device='cpu')"
    )
    assert "vla.policies.runtime" in modules and "vla.model.model" in modules  # it did load
    # torch itself imports torch.utils.data; the training data stack and the training package stay out.
    assert not _training_modules(modules)


def test_the_robot_side_client_imports_neither_torch_nor_training_code() -> None:
    modules = _imported_after("import vla_client\nimport vla.deploy.client")
    assert "vla_client.remote" in modules
    assert not {"torch", "torch.utils.data", "mujoco", "gymnasium"} & modules
    assert not _training_modules(modules)
