"""``vla convert``: LeRobot datasets <-> trajectory stores.

    vla convert from-lerobot <repo_id> --root <dir> --out <store.zarr> [--max-episodes N]
    vla convert to-lerobot <store.zarr> --out <dir> --repo-id <id> [--max-episodes N] [--vcodec C]

Both directions can be rerun after an interruption (see each module's docstring); nothing touches
the Hugging Face Hub.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)


def _from_lerobot(args: argparse.Namespace) -> int:
    from vla.interop.from_lerobot import convert_from_lerobot

    report = convert_from_lerobot(
        args.repo_id, args.root, args.out, max_episodes=args.max_episodes, progress=not args.quiet
    )
    print(
        f"converted {len(report.converted)} episodes, skipped {len(report.skipped)} already in the store; "
        f"{args.out} now holds {report.store_episodes} episodes (source: {report.source_episodes})"
    )
    return 0


def _to_lerobot(args: argparse.Namespace) -> int:
    from vla.interop.to_lerobot import convert_to_lerobot

    out = convert_to_lerobot(
        args.store,
        args.out,
        args.repo_id,
        max_episodes=args.max_episodes,
        vcodec=args.vcodec,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"LeRobot dataset {args.repo_id!r} written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vla convert``."""
    parser = argparse.ArgumentParser(prog="vla convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="direction", required=True)

    source = sub.add_parser("from-lerobot", help="a local LeRobot v3.0 dataset -> a trajectory store")
    source.add_argument("repo_id", help="the dataset's repo id (as written in its folder; never fetched)")
    source.add_argument("--root", required=True, help="the local folder holding meta/, data/, videos/")
    source.add_argument("--out", required=True, help="the trajectory store to create or append to")
    source.set_defaults(run=_from_lerobot)

    target = sub.add_parser("to-lerobot", help="a trajectory store -> a LeRobot v3.0 dataset")
    target.add_argument("store", help="the trajectory store to read")
    target.add_argument("--out", required=True, help="the folder to write the LeRobot dataset into")
    target.add_argument("--repo-id", required=True, help="the repo id recorded in the dataset")
    target.add_argument("--vcodec", default="libsvtav1", help="video codec: libsvtav1 (default), h264, hevc")
    target.add_argument("--overwrite", action="store_true", help="rebuild even if --out is already complete")
    target.set_defaults(run=_to_lerobot)

    for command in (source, target):
        command.add_argument("--max-episodes", type=int, default=None, help="convert only the first N")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vla convert``; returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.max_episodes is not None and args.max_episodes < 1:
        print(f"vla convert: --max-episodes must be >= 1, got {args.max_episodes}", file=sys.stderr)
        return 2
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"vla convert {args.direction}: {exc}", file=sys.stderr)
        return 1
