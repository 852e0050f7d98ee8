"""The fixed evaluation protocol: which episodes run, and the facts every report records about them."""

from __future__ import annotations

import hashlib
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vla.evaluation.run import EpisodeRequest
from vla.seeds import eval_seeds, task_numbers

PHRASING_SETS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "heldout": ("heldout",),
    "both": ("train", "heldout"),
}
# Files that define a checkpoint's behaviour; optimizer and trainer state are left out of the hash.
_HASHED_SUFFIXES = {
    ".safetensors",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".json",
    ".yaml",
    ".yml",
    ".npz",
    ".msgpack",
}
_UNHASHED_PREFIXES = ("optimizer", "scheduler", "train_state", "trainer_state", "rng", ".")


def phrasings_of(selection: str | Sequence[str]) -> list[str]:
    """``train``, ``heldout`` or ``both`` (or an explicit list) -> the phrasing sets to evaluate."""
    if isinstance(selection, str):
        if selection not in PHRASING_SETS:
            raise ValueError(f"phrasing must be one of {sorted(PHRASING_SETS)}, got {selection!r}")
        return list(PHRASING_SETS[selection])
    unknown = [p for p in selection if p not in PHRASING_SETS["both"]]
    if unknown or not selection:
        raise ValueError(
            f"phrasings must be a non-empty subset of {PHRASING_SETS['both']}, got {list(selection)}"
        )
    return list(dict.fromkeys(selection))


def seeds_per_task(
    tasks: Sequence[str], episodes_per_task: int, all_tasks: Sequence[str]
) -> dict[str, list[int]]:
    """The published eval seeds of each task, numbered by its place in the suite's full task list.

    Numbering by the full list (not the selection) gives a task the same seeds whether it is
    evaluated alone or with others; tasks outside that list are numbered after it.
    """
    numbers = task_numbers(tasks, all_tasks)
    return {task: eval_seeds(episodes_per_task, task_index=numbers[task]) for task in tasks}


def episode_plan(seeds: Mapping[str, Sequence[int]], phrasings: Sequence[str]) -> list[EpisodeRequest]:
    """Every (task, seed, phrasing): each seed is evaluated under every phrasing set."""
    return [
        EpisodeRequest(task, seed, p)
        for task, task_seeds in seeds.items()
        for seed in task_seeds
        for p in phrasings
    ]


def checkpoint_hash(checkpoint_dir: str | Path) -> str:
    """sha256 over the weight and config files of a checkpoint folder (names and contents, sorted)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {root} does not exist")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in _HASHED_SUFFIXES
        and not any(part.startswith(_UNHASHED_PREFIXES) for part in p.relative_to(root).parts)
    )
    if not files:
        raise ValueError(
            f"checkpoint folder {root} holds no weight or config files ({sorted(_HASHED_SUFFIXES)})"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder ``load_policy`` reads: a run directory resolves to its latest checkpoint."""
    if any(p.suffix == ".safetensors" for p in Path(path).glob("*")):
        return Path(path)  # already a checkpoint folder
    from vla.checkpoint import CheckpointError
    from vla.checkpoint import resolve_checkpoint as resolve

    try:
        return Path(resolve(path))
    except CheckpointError:  # not a vla checkpoint (e.g. a lerobot policy folder): hash it as it is
        return Path(path)


def reproduce_command(args: Mapping[str, Any]) -> str:
    """The ``vla eval`` command line with these ``key=value`` arguments (None values left out)."""
    parts = ["vla", "eval"]
    for key, value in args.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = "[" + ",".join(str(v) for v in value) + "]"
        parts.append(f"{key}={value}")
    return shlex.join(parts)


def environment_facts() -> dict[str, str]:
    """Versions and machine, so numbers can be compared across runs."""
    from vla import __version__

    return {
        "vla_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
