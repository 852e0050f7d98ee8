"""``vla demo``: the whole stack on the embedded default, end to end, on a CPU.

1. record scripted-expert demonstrations (``datasets/tabletop_demo.yaml``) into a Zarr store;
2. train the ``tiny`` VLA on them (``policies/tiny.yaml``);
3. evaluate it in closed loop on the demo tasks with the published evaluation seeds, under the
   training phrasings and the held-out phrasings;
4. print the success table and the paths of the report, the plot and the videos.

Each step is the same command a user would type (printed as it runs), and each is resumable:
rerunning the demo reuses the recorded episodes and the finished training run.

    vla demo [out=runs/demo] [episodes_per_task=50] [train.steps=N] [record.episodes_per_task=N]
             [quick=true]

``quick=true`` is the smoke-test size used by the test suite (a handful of episodes and steps).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vla.config import load_group

DATASET = "tabletop_demo"
POLICY = "tiny"


@dataclass
class DemoSettings:
    """What the demo runs; the defaults are the published demo."""

    out: Path = Path("runs/demo")
    store: Path | None = None  # default: the dataset recipe's ``out``
    record_episodes_per_task: int | None = None  # default: the recipe's
    train_steps: int | None = None  # default: the policy's
    episodes_per_task: int = 50  # evaluation episodes per task and phrasing set
    videos: int = 6
    quick: bool = False

    @classmethod
    def from_args(cls, argv: Sequence[str]) -> DemoSettings:
        settings = cls()
        parsers: dict[str, Callable[[str], None]] = {
            "out": lambda v: setattr(settings, "out", Path(v)),
            "store": lambda v: setattr(settings, "store", Path(v)),
            "record.episodes_per_task": lambda v: setattr(settings, "record_episodes_per_task", int(v)),
            "train.steps": lambda v: setattr(settings, "train_steps", int(v)),
            "episodes_per_task": lambda v: setattr(settings, "episodes_per_task", int(v)),
            "videos": lambda v: setattr(settings, "videos", int(v)),
            "quick": lambda v: setattr(settings, "quick", v.lower() in {"1", "true", "yes"}),
        }
        for arg in argv:
            key, sep, value = arg.partition("=")
            if not sep or key not in parsers:
                raise ValueError(
                    f"unknown demo argument {arg!r}; known: {', '.join(k + '=' for k in parsers)}"
                )
            try:
                parsers[key](value)
            except ValueError as exc:
                raise ValueError(f"bad value for {key}: {value!r}") from exc
        if settings.quick:  # smoke-test size: every artifact, minimal compute
            settings.record_episodes_per_task = settings.record_episodes_per_task or 4
            settings.train_steps = settings.train_steps or 30
            settings.episodes_per_task = min(settings.episodes_per_task, 2)
            settings.videos = min(settings.videos, 2)
        return settings


def _run_step(title: str, command: str, argv: list[str], main: Callable[[list[str]], int]) -> None:
    print(f"\n== {title}\n$ vla {command} {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    status = main(argv)
    if status != 0:
        raise SystemExit(f"vla demo: step '{title}' failed with exit status {status}")
    print(f"({title}: {time.perf_counter() - started:.0f} s)", flush=True)


def run_demo(settings: DemoSettings) -> Path:
    """Record, train and evaluate; returns the evaluation output directory."""
    from vla.envs.record import main as record_main
    from vla.evaluation.cli import main as eval_main
    from vla.train.cli import main as train_main

    store = settings.store or Path(str(load_group("dataset", DATASET).out))
    if settings.quick and settings.store is None:
        store = settings.out / "demo.zarr"
    run_dir = settings.out / "train"
    eval_dir = settings.out / "eval"

    record_args = [f"dataset={DATASET}", f"out={store}"]
    if settings.record_episodes_per_task:
        record_args.append(f"episodes_per_task={settings.record_episodes_per_task}")
    train_args = [f"store={store}", f"policy={POLICY}", f"out={run_dir}"]
    if settings.train_steps:
        train_args.append(f"train.steps={settings.train_steps}")
    if settings.quick:
        train_args += ["train.val_every=10", "train.save_every=10", "train.log_every=5"]
    eval_args = [
        f"checkpoint={run_dir}",
        f"env={DATASET}",
        f"episodes_per_task={settings.episodes_per_task}",
        "phrasing=both",
        f"videos={settings.videos}",
        f"out={eval_dir}",
    ]

    started = time.perf_counter()
    _run_step("1/3 record demonstrations", "record", record_args, record_main)
    _run_step("2/3 train the tiny VLA", "train", train_args, train_main)
    _run_step("3/3 evaluate in closed loop", "eval", eval_args, eval_main)
    minutes = (time.perf_counter() - started) / 60

    print(f"\n== results ({minutes:.1f} min end to end)\n")
    print((eval_dir / "report.md").read_text())
    print(f"store:      {store}")
    print(f"checkpoint: {run_dir}")
    print(f"report:     {eval_dir / 'report.json'}  ({eval_dir / 'report.md'})")
    print(f"plot:       {eval_dir / 'success.png'}")
    print(f"videos:     {eval_dir / 'videos'}")
    return eval_dir


def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla demo``."""
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    try:
        settings = DemoSettings.from_args(argv)
    except ValueError as exc:
        print(f"vla demo: {exc}", file=sys.stderr)
        return 2
    run_demo(settings)
    return 0
