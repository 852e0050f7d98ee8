"""``vla data``: info, validate, stats and demo for trajectory stores.

    vla data info <store>                  episodes, frames, features, instructions, size
    vla data validate <store>              check every array, boundary and chunk; exit 1 on problems
    vla data stats <store>                 compute, print and save feature statistics
    vla data demo <store> [episodes=6] [overwrite=false]
                                           write a few synthetic episodes, validate, print info

The store comes first (or as ``store=<path>``); options use the ``key=value`` grammar of every
``vla`` command (:mod:`vla.config`). Bad input is reported in one line: an unknown key or subcommand
(exit status 2), a path that holds no store (exit status 1, and no writer lock file is left there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from vla.cli_errors import cli_main
from vla.config_schema import at_least, required
from vla.data.store import TrajectoryStore, is_remote
from vla.data.validate import quick_problems, validate_store


def _size_on_disk(path: str) -> str:
    if is_remote(path):
        return "n/a (remote store)"
    total = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return f"{total / 2**20:.1f} MiB"


def print_info(path: str) -> int:
    store = TrajectoryStore.open(path)
    print(f"store      {path}")
    print(f"robot      {store.robot_type} at {store.fps:g} fps")
    print(f"episodes   {store.num_episodes} ({sum(m.success for m in store.episodes_meta())} successful)")
    print(f"frames     {store.num_frames}")
    print(f"on disk    {_size_on_disk(path)}")
    print("features")
    for name, spec in store.schema.features.items():
        names = f"  [{', '.join(spec.names)}]" if spec.names else ""
        print(f"  {name:<32} {spec.kind:<7} {spec.dtype:<8} {tuple(spec.shape)}{names}")
    print("instructions")
    for text, count in Counter(m.instruction for m in store.episodes_meta()).most_common():
        print(f"  {count:>6}  {text}")
    print(f"statistics {'current' if store.stats_are_current() else 'missing or stale (vla data stats)'}")
    # Metadata and file listings only (no chunk is read): damage a listing shows is reported here.
    damage = quick_problems(store)
    if not damage:
        print("status     no damage in the metadata or chunk files (`vla data validate` reads every chunk)")
        return 0
    print(f"status     DAMAGED: {len(damage)} problem(s); run `vla data validate {path}` for a full check")
    for problem in damage[:10]:
        print(f"  {problem}")
    return 1


def run_validate(path: str) -> int:
    problems = validate_store(path)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def run_stats(path: str) -> int:
    TrajectoryStore.open(path).close()  # read-only first: refuse a non-store before a lock file is made
    with TrajectoryStore.open(path, mode="a") as store:
        stats = store.compute_stats(write=True)
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    for name, values in stats.items():
        print(name)
        for key, value in values.items():
            print(f"  {key:<5} {value}")
    print(f"statistics saved in {path}")
    return 0


def run_demo(path: str, episodes: int, overwrite: bool) -> int:
    from vla.data.synthetic import synthetic_schema, write_synthetic_store

    store = write_synthetic_store(
        path, episodes, (40, 80), synthetic_schema(image_size=64), overwrite=overwrite
    )
    store.compute_stats(write=True)
    store.close()
    code = run_validate(path)
    print()
    return code or print_info(path)


@dataclass
class StoreCommand:
    """The arguments of ``vla data info|validate|stats``: the store."""

    store: str = required("<store>")


@dataclass
class DemoCommand(StoreCommand):
    """The arguments of ``vla data demo``."""

    episodes: int = at_least(6, 1)
    overwrite: bool = False  # replace an existing store at the path


# subcommand -> (the schema of its arguments, the key of its positional argument, what it runs)
COMMANDS: dict[str, tuple[type, str, Callable[[DictConfig], int]]] = {
    "info": (StoreCommand, "store", lambda cfg: print_info(cfg.store)),
    "validate": (StoreCommand, "store", lambda cfg: run_validate(cfg.store)),
    "stats": (StoreCommand, "store", lambda cfg: run_stats(cfg.store)),
    "demo": (DemoCommand, "store", lambda cfg: run_demo(cfg.store, cfg.episodes, cfg.overwrite)),
}


@cli_main("data")
def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla data``; returns the exit status."""
    from vla.config import run_subcommand  # Hydra loads only when a command line is read

    return run_subcommand("data", argv, COMMANDS, usage=__doc__ or "")
