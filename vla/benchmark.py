"""``vla benchmark``: record, train and evaluate one benchmark suite, and write its results table.

    vla benchmark suite=<name> [out=runs/benchmark/<name>] [quick=true]
                  [record.<key>=<value> ...] [train.<key>=<value> ...] [eval.<key>=<value> ...]

A suite is a file of the ``benchmarks/`` config group: the dataset recipe to record
(``datasets/``), the policy to train (``policies/``) and the evaluation protocol, each with its own
overrides. The command runs, printing each as the command you could type yourself:

1. ``vla record dataset=<recipe> out=<out>/data.zarr ...`` (training seeds only);
2. ``vla train store=<out>/data.zarr policy=<policy> out=<out>/train ...``;
3. ``vla eval checkpoint=<out>/train env=<env> ...`` on the published evaluation seeds, with the env
   options the data was recorded with (image size, tasks), under both phrasing sets by default;
4. writes ``<out>/results.md`` and ``<out>/results.json``: success per task and phrasing with
   Wilson intervals, the mean task success, and the wall-clock time of each step.

Every step resumes: the store keeps its committed episodes, training continues from its latest
checkpoint, and an evaluation whose report matches the checkpoint and protocol is reused. So
rerunning the same command after an interruption finishes the job; the times recorded are those of
the runs that did the work (``<out>/benchmark.json``). ``quick=true`` is the smoke-test size the test
suite runs (a few episodes, steps and evaluation seeds). ``vla demo`` is ``vla benchmark suite=demo``.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla.cli_errors import cli_main
from vla.code_version import code_version
from vla.config import ConfigError, compose_command
from vla.config_schema import at_least, choice, config_group, required, unset_schema
from vla.envs.record import RecordOverrides
from vla.evaluation.protocol import PHRASING_SETS
from vla.policies.runtime import FLOW_NOISE
from vla.train.cli import TrainSection

STATE_FILE = "benchmark.json"
# The smoke-test size of quick=true: every artifact, minimal compute.
# Compiling costs ~40 s up front, more than 20 steps take eagerly.
QUICK = {"record": {"episodes_per_task": 2, "task_episodes": None}, "train": {"steps": 20, "val_every": 10, "save_every": 10,
         "log_every": 5, "compile": False}, "eval": {"episodes_per_task": 1, "videos": 1}}  # fmt: skip


@dataclass
class EvalOptions:
    """The evaluation protocol of a suite: the ``vla eval`` keys a suite or the command line may set
    (``vla eval``'s own defaults apply to the others)."""

    episodes_per_task: int = at_least(10, 1)
    phrasing: str = choice("both", PHRASING_SETS)
    replan_every: int | None = at_least(None, 1)
    temporal_ensemble: float | None = None
    num_envs: int = at_least(2, 1)
    videos: int = at_least(4, 0)
    precision: str = "auto"
    flow_noise: str = choice("fresh", FLOW_NOISE)
    flow_noise_scale: float = at_least(1.0, 0.0)
    flow_steps: int | None = at_least(None, 1)
    max_steps: int | None = at_least(None, 1)


# What a suite file and the command line hold: the same keys, each unset unless given.
EvalOverrides = unset_schema(EvalOptions, "EvalOverrides")


@dataclass
class BenchmarkRecipe:
    """A file of ``benchmarks/``: what to record, what to train and how to evaluate it."""

    name: str | None = None
    description: str | None = None
    dataset: str = required("<datasets/ recipe>")
    policy: str = required("<policies/ file>")
    env: str | None = None  # the env config to evaluate on (default: the dataset's)
    record: RecordOverrides = field(default_factory=RecordOverrides)  # type: ignore[valid-type]
    train: TrainSection = field(default_factory=TrainSection)  # type: ignore[valid-type]
    eval: EvalOverrides = field(default_factory=EvalOverrides)  # type: ignore[valid-type]


@dataclass
class BenchmarkCommand:
    """``vla benchmark``'s keys: the suite, and overrides of its record, train and eval sections."""

    suite: Any = config_group()
    out: str | None = None  # default: runs/benchmark/<suite>
    quick: bool = False
    record: RecordOverrides = field(default_factory=RecordOverrides)  # type: ignore[valid-type]
    train: TrainSection = field(default_factory=TrainSection)  # type: ignore[valid-type]
    eval: EvalOverrides = field(default_factory=EvalOverrides)  # type: ignore[valid-type]


@dataclass
class Plan:
    """The three commands of a benchmark run and where they write."""

    suite: str
    out: Path
    store: Path
    run_dir: Path
    eval_dir: Path
    record_args: list[str]
    train_args: list[str]
    eval_args: list[str]


def plan(
    suite: Mapping[str, Any], out: Path, overrides: Mapping[str, Mapping[str, Any]], quick: bool
) -> Plan:
    """The record / train / eval arguments of ``suite`` with ``overrides`` (the command line's,
    which win over the suite file's) written under ``out``."""
    sections = {
        part: {
            **dict(suite.get(part) or {}),
            **(QUICK[part] if quick else {}),  # the smoke-test size wins over the suite's own sizes
            **dict(overrides.get(part) or {}),
        }
        for part in ("record", "train", "eval")
    }
    store = Path(str(sections["record"].pop("out", None) or out / "data.zarr"))
    run_dir, eval_dir = out / "train", out / "eval"
    record_args = [f"dataset={suite['dataset']}", f"out={store}", *_args(sections["record"])]
    train_args = [f"store={store}", f"policy={suite['policy']}", f"out={run_dir}",
                  *_args(sections["train"], "train.")]  # fmt: skip
    # The eval env is the one the data was recorded in: same image size and tasks.
    env = suite.get("env") or _dataset_env(str(suite["dataset"]))
    env_args = [
        f"env.{k}={_value(sections['record'][k])}" for k in ("image_size", "tasks") if k in sections["record"]
    ]
    eval_section = {"phrasing": "both", **sections["eval"]}
    eval_args = [f"checkpoint={run_dir}", f"env={env}", *env_args, f"out={eval_dir}", *_args(eval_section)]
    name = str(suite.get("name") or "benchmark")
    return Plan(name, out, store, run_dir, eval_dir, record_args, train_args, eval_args)


def _dataset_env(dataset: str) -> str:
    from vla.config import load_group

    env = load_group("dataset", dataset).get("env")
    if not isinstance(env, str):
        raise ValueError(f"dataset recipe {dataset!r} names no env; give the suite an env: entry")
    return env


def _args(section: Mapping[str, Any], prefix: str = "") -> list[str]:
    return [f"{prefix}{key}={_value(value)}" for key, value in section.items() if value is not None]


def _value(value: Any) -> str:
    """A value in Hydra's override grammar (lists as ``[a,b]``, mappings as ``{k:v}`` with bare keys,
    which is all the grammar allows, booleans lower case)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    return str(value)


class StepFailed(Exception):
    """A step exited non-zero; it has reported why on stderr already."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def run(p: Plan, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the three steps of ``p`` and write the results; returns ``results.json``."""
    from vla.envs.record import main as record_main
    from vla.evaluation.cli import main as eval_main
    from vla.train.cli import main as train_main

    p.out.mkdir(parents=True, exist_ok=True)
    state = _read_state(p.out)
    started = time.perf_counter()
    steps: list[tuple[str, str, list[str], Callable[[list[str]], int], Callable[[], Any]]] = [
        ("record", "1/3 record demonstrations", p.record_args, record_main, lambda: _store_episodes(p.store)),
        ("train", "2/3 train the policy", p.train_args, train_main, lambda: _trained_step(p.run_dir)),
        ("eval", "3/3 evaluate in closed loop", p.eval_args, eval_main, lambda: _report_key(p.eval_dir)),
    ]
    for key, title, argv, main, progress_of in steps:
        if key == "eval" and _report_matches(p.eval_dir, p.run_dir, argv):
            progress(f"\n== {title}: reusing {p.eval_dir / 'report.json'} (same checkpoint and protocol)")
            continue
        before = progress_of()
        progress(f"\n== {title}\n$ vla {key} {shlex.join(argv)}")
        code = code_version()  # the code this step imports (an editable install can change mid-run)
        step_started = time.perf_counter()
        status = 1
        try:
            status = main(argv)
        finally:  # an interrupted step keeps its work (every step resumes), so its time counts too
            seconds = time.perf_counter() - step_started
            if progress_of() != before:
                entry = state["steps"].setdefault(key, {"runs": []})
                entry["runs"].append(round(seconds, 2))
                entry.setdefault("code", []).append(code)
                entry["command"] = f"vla {key} {shlex.join(argv)}"
                _write_state(p.out, state)
        if status != 0:
            raise StepFailed(status)
        progress(f"({title}: {seconds:.0f} s)")
    results = write_results(p, state, time.perf_counter() - started)
    return results


def _store_episodes(path: Path) -> int | None:
    from vla.data import TrajectoryStore
    from vla.data.errors import StoreError

    if not path.exists():
        return 0
    try:
        with TrajectoryStore.open(path, mode="r") as store:
            return store.num_episodes
    except (OSError, StoreError):  # not a store (yet): the record step itself says what is wrong
        return None


def _trained_step(run_dir: Path) -> str | None:
    from vla import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return None if latest is None else latest.name


def _report_key(eval_dir: Path) -> float | None:
    path = eval_dir / "report.json"
    return path.stat().st_mtime if path.is_file() else None


def _report_matches(eval_dir: Path, run_dir: Path, argv: Sequence[str]) -> bool:
    """Whether ``eval_dir`` holds a report of this very checkpoint under the same arguments."""
    from vla.evaluation.protocol import checkpoint_hash, resolve_checkpoint

    path = eval_dir / "report.json"
    if not path.is_file() or not run_dir.is_dir():
        return False
    try:
        protocol = json.loads(path.read_text())["protocol"]
        same_weights = protocol.get("checkpoint_hash") == checkpoint_hash(resolve_checkpoint(run_dir))
    except (OSError, ValueError, KeyError):
        return False
    return same_weights and protocol.get("argv") == ["vla", "eval", *argv]


def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    if path.is_file():
        try:
            state = json.loads(path.read_text())
            if isinstance(state.get("steps"), dict) and all("runs" in v for v in state["steps"].values()):
                return state
        except ValueError:
            pass  # a damaged state file only loses the recorded times: they are measured again
    return {"steps": {}}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(out / STATE_FILE)


def write_results(p: Plan, state: Mapping[str, Any], wall_s: float) -> dict[str, Any]:
    """``results.json`` and ``results.md`` in ``p.out`` from the eval report and the step times."""
    from vla.evaluation.report import load_report
    from vla.machine import describe_machine

    report = load_report(p.eval_dir)
    # A step's time is the sum of the runs that did its work (an interrupted run, then its resumption).
    times = {k: float(sum(v["runs"])) for k, v in state["steps"].items()}
    results = {
        "suite": p.suite,
        "machine": describe_machine(),
        "commands": {k: v["command"] for k, v in state["steps"].items()},
        # The code each step's runs started on (states written before 2026-12-04 lack it).
        "code": {k: list(dict.fromkeys(v.get("code", []))) for k, v in state["steps"].items()},
        "seconds": times,
        "record_and_train_minutes": (times.get("record", 0.0) + times.get("train", 0.0)) / 60,
        "overall": [_row(r) for r in report.overall],
        "per_task": [_row(r) for r in report.per_task],
        "per_difficulty": [_row(r) for r in report.per_difficulty],
        "report": str(p.eval_dir / "report.json"),
    }
    (p.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (p.out / "results.md").write_text(results_markdown(results))
    return results


def _row(row: Any) -> dict[str, Any]:
    return {
        "group": row.group, "phrasing": row.phrasing, "episodes": row.episodes, "successes": row.successes,
        "success_rate": row.success_rate, "ci_low": row.ci_low, "ci_high": row.ci_high,
        "mean_task_success": row.mean_task_success,
    }  # fmt: skip


def _cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "-"
    return (f"{100 * row['success_rate']:.1f}% [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}] "
            f"({row['successes']}/{row['episodes']})")  # fmt: skip


def results_markdown(results: Mapping[str, Any]) -> str:
    """The results table: overall (pooled and mean over tasks), per task, the steps' times."""
    phrasings = list(dict.fromkeys(r["phrasing"] for r in results["overall"]))
    lines = [f"# Benchmark: {results['suite']}", "", f"Machine: {results['machine']}", ""]
    header = "| | " + " | ".join(f"{p} phrasings" for p in phrasings) + " |"
    lines += [header, "|---|" + "---|" * len(phrasings)]
    overall = {r["phrasing"]: r for r in results["overall"]}
    lines.append(
        "| **all (pooled)** | " + " | ".join(f"**{_cell(overall.get(p))}**" for p in phrasings) + " |"
    )
    means = [overall[p]["mean_task_success"] for p in phrasings if p in overall]
    lines.append("| mean task success | " + " | ".join(f"{100 * m:.1f}%" for m in means) + " |")
    for rows, title in ((results["per_difficulty"], "difficulty"), (results["per_task"], "task")):
        groups = list(dict.fromkeys(r["group"] for r in rows))
        for group in groups:
            by = {r["phrasing"]: r for r in rows if r["group"] == group}
            lines.append(f"| {group} | " + " | ".join(_cell(by.get(p)) for p in phrasings) + " |")
        if groups and title == "difficulty":
            lines.append("| | " + " | ".join("" for _ in phrasings) + " |")
    seconds, code = results["seconds"], results.get("code", {})
    lines += ["", "| step | wall clock | code | command |", "|---|---|---|---|"]
    for step in ("record", "train", "eval"):
        if step in seconds:
            versions = ", ".join(code.get(step, [])) or "not recorded"
            lines.append(
                f"| {step} | {seconds[step] / 60:.1f} min | {versions} | `{results['commands'][step]}` |"
            )
    lines.append(f"| record + train | {results['record_and_train_minutes']:.1f} min | | |")
    if warning := code_warning(code):
        lines += ["", warning]
    return "\n".join(lines) + "\n"


def code_warning(code: Mapping[str, Sequence[str]]) -> str | None:
    """A line saying the steps did not all run on one clean commit, or None when they did."""
    versions = {v for runs in code.values() for v in runs}
    if len(versions) > 1:
        by_step = "; ".join(f"{step}: {', '.join(runs)}" for step, runs in code.items() if runs)
        return f"**Warning: the steps ran on different code** ({by_step}): these results mix versions."
    if any(v.endswith("+dirty") for v in versions):
        return "**Warning: the code had uncommitted changes** (`+dirty`): its commit alone does not reproduce it."
    return None


def overrides_of(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The command line's record / train / eval sections of a composed benchmark config."""
    return {part: dict(cfg.get(part) or {}) for part in ("record", "train", "eval")}


def benchmark_main(argv: Sequence[str], default_suite: str | None = None) -> int:
    """Run ``vla benchmark <argv>`` (``default_suite`` when the arguments name none)."""
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    args = list(argv)
    if default_suite and not any(a.lstrip("+~").startswith("suite=") for a in args):
        args.insert(0, f"suite={default_suite}")
    cfg = compose_command("benchmark", args, BenchmarkCommand)
    if "suite" not in cfg:
        from vla.config import available

        raise ConfigError(f"name a suite: suite=<name>; choose one of: {', '.join(available('suite'))}")
    suite = dict(cfg.suite)
    out = Path(cfg.out or Path("runs") / "benchmark" / str(suite["name"]))
    started = time.perf_counter()
    steps = plan(suite, out, overrides_of(cfg), bool(cfg.quick))
    try:
        results = run(steps)
    except StepFailed as failed:  # the step printed its one line; its status is the benchmark's
        return failed.status
    print(f"\n== results ({(time.perf_counter() - started) / 60:.1f} min in this run)\n")
    print((out / "results.md").read_text())
    print(f"results:    {out / 'results.md'} ({out / 'results.json'})")
    print(f"store:      {steps.store}")  # record.out=<path> puts it outside the benchmark's folder
    print(f"checkpoint: {steps.run_dir}")
    print(
        f"report:     {results['report']}  (plot: {steps.eval_dir / 'success.png'}, videos: {steps.eval_dir / 'videos'})"
    )
    return 0


@cli_main("benchmark")
def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla benchmark``."""
    return benchmark_main(argv)
