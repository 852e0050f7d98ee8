"""``vla convert``: LeRobot datasets <-> trajectory stores.

    vla convert from-lerobot <repo_id> root=<dir> out=<store.zarr> [max_episodes=N] [quiet=false]
    vla convert to-lerobot <store.zarr> out=<dir> repo_id=<id> [max_episodes=N] [vcodec=libsvtav1]
                           [overwrite=false] [quiet=false]

The dataset or store comes first (or as ``repo_id=`` / ``store=``); options use the ``key=value``
grammar of every ``vla`` command (:mod:`vla.config`), and bad input is reported in one line: an
unknown key (exit status 2), a folder that is no complete LeRobot dataset, naming what is missing
(exit status 1). Both directions can be rerun after an interruption (see each module's docstring);
nothing touches the Hugging Face Hub (``HF_HUB_OFFLINE=1`` is set before lerobot loads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)
from vla.cli_errors import cli_main
from vla.config_schema import at_least, required


@dataclass
class FromLeRobotCommand:
    """The arguments of ``vla convert from-lerobot``."""

    repo_id: str = required("<repo id>")  # as written in the dataset's folder; never fetched
    root: str = required("<dir>")  # the local folder holding meta/, data/, videos/
    out: str = required("<store.zarr>")  # the trajectory store to create or append to
    max_episodes: int | None = at_least(None, 1)  # convert only the first N
    quiet: bool = False  # no progress bar


@dataclass
class ToLeRobotCommand:
    """The arguments of ``vla convert to-lerobot``."""

    store: str = required("<store.zarr>")
    out: str = required("<dir>")  # the folder to write the LeRobot dataset into
    repo_id: str = required("<id>")  # the repo id recorded in the dataset
    max_episodes: int | None = at_least(None, 1)
    vcodec: str = "libsvtav1"  # or h264, hevc
    overwrite: bool = False  # rebuild even if out is already complete
    quiet: bool = False


def _from_lerobot(cfg: DictConfig) -> int:
    from vla.interop.from_lerobot import convert_from_lerobot

    report = convert_from_lerobot(
        cfg.repo_id, cfg.root, cfg.out, max_episodes=cfg.max_episodes, progress=not cfg.quiet
    )
    print(
        f"converted {len(report.converted)} episodes, skipped {len(report.skipped)} already in the store; "
        f"{cfg.out} now holds {report.store_episodes} episodes (source: {report.source_episodes})"
    )
    return 0


def _to_lerobot(cfg: DictConfig) -> int:
    from vla.interop.to_lerobot import convert_to_lerobot

    out = convert_to_lerobot(
        cfg.store,
        cfg.out,
        cfg.repo_id,
        max_episodes=cfg.max_episodes,
        vcodec=cfg.vcodec,
        overwrite=cfg.overwrite,
        progress=not cfg.quiet,
    )
    print(f"LeRobot dataset {cfg.repo_id!r} written to {out}")
    return 0


# direction -> (the schema of its arguments, its positional argument, what it runs)
DIRECTIONS: dict[str, tuple[type, str, Callable[[DictConfig], int]]] = {
    "from-lerobot": (FromLeRobotCommand, "repo_id", _from_lerobot),
    "to-lerobot": (ToLeRobotCommand, "store", _to_lerobot),
}


@cli_main("convert")
def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla convert``; returns the exit status."""
    from vla.config import run_subcommand  # Hydra loads only when a command line is read

    return run_subcommand("convert", argv, DIRECTIONS, usage=__doc__ or "")
