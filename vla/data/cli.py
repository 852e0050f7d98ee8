"""``vla data``: info, validate, stats and demo for trajectory stores."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vla.data.store import TrajectoryStore, is_remote
from vla.data.validate import validate_store


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
    return 0


def run_validate(path: str) -> int:
    problems = validate_store(path)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def run_stats(path: str) -> int:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla data", description="Inspect and check trajectory stores.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="episodes, frames, features, instructions, size").add_argument("path")
    sub.add_parser("validate", help="check every array, boundary and chunk; exit 1 on problems").add_argument(
        "path"
    )
    sub.add_parser("stats", help="compute, print and save feature statistics").add_argument("path")
    demo = sub.add_parser("demo", help="write a few synthetic episodes, validate, print info")
    demo.add_argument("path")
    demo.add_argument("--episodes", type=int, default=6)
    demo.add_argument("--overwrite", action="store_true", help="replace an existing store at PATH")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "info": lambda a: print_info(a.path),
    "validate": lambda a: run_validate(a.path),
    "stats": lambda a: run_stats(a.path),
    "demo": lambda a: run_demo(a.path, a.episodes, a.overwrite),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vla data``; returns the exit status."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    try:
        return COMMANDS[args.command](args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"vla data {args.command}: {exc}", file=sys.stderr)
        return 1
