"""``validate_store``: check a store end to end and report every problem found.

Checks the commit record and schema, each array's dtype, shape and length, the episode boundaries
and per-episode metadata, and that every chunk of every feature exists and decodes (CRC32C
verified) with finite values. A bad chunk is reported with its feature, frames and episodes.

:func:`quick_problems` is the cheap part (metadata and one listing of each feature's chunk files,
no chunk read), for ``vla data info``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import zarr
from zarr.core.sync import sync

from vla.data import layout
from vla.data.errors import StoreError
from vla.data.store import TrajectoryStore, read_text


def _episodes_touching(ends: np.ndarray, start: int, stop: int) -> str:
    first = int(np.searchsorted(ends, start, side="right"))
    last = int(np.searchsorted(ends, stop - 1, side="right"))
    last = min(last, len(ends) - 1)
    return f"episode {first}" if first == last else f"episodes {first}..{last}"


def _short_meta(store: TrajectoryStore) -> list[str]:
    n = store.num_episodes
    return [
        f"meta/{name}: {store.array(f'meta/{name}').shape[0]} entries, {n} episodes committed"
        for name in layout.NUMERIC_META
        if store.array(f"meta/{name}").shape[0] < n
    ]


def _array_problems(store: TrajectoryStore, name: str) -> tuple[list[str], int]:
    """How feature ``name``'s array differs from the schema and the commit record, and how many of
    its frames can be checked further (0 when its dtype or frame shape is wrong)."""
    spec = store.schema.features[name]
    array = store.array(f"data/{name}")
    if array.dtype != np.dtype(spec.dtype) or tuple(array.shape[1:]) != spec.shape:
        return [
            f"feature {name!r}: array is {array.dtype} {array.shape[1:]}, schema says {spec.dtype} {spec.shape}"
        ], 0
    if array.shape[0] < store.num_frames:
        return [
            f"feature {name!r}: {array.shape[0]} frames stored, {store.num_frames} committed"
        ], array.shape[0]
    return [], store.num_frames


async def _listed(store: zarr.abc.store.Store, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


def missing_chunk_files(store: TrajectoryStore, name: str, end: int) -> list[tuple[int, int, str]]:
    """``(first frame, last frame, file key)`` of each file of frames ``[0, end)`` of ``name`` not on disk.

    One listing of the array's chunk directory: no chunk is read.
    """
    array = store.array(f"data/{name}")
    file_frames = layout.stored_file_frames(array)
    present = sync(_listed(array.store, f"{array.path}/"))
    missing = []
    for number in range(-(-end // file_frames)):
        key = array.metadata.encode_chunk_key((number,) + (0,) * (array.ndim - 1))
        if f"{array.path}/{key}" not in present:
            first = number * file_frames
            missing.append((first, min(first + file_frames, end) - 1, f"{array.path}/{key}"))
    return missing


def quick_problems(store: TrajectoryStore) -> list[str]:
    """What the store's metadata and file listing show is wrong, without reading any chunk."""
    problems = _short_meta(store)
    for name in store.schema.features:
        found, end = _array_problems(store, name)
        problems += found
        for first, last, key in missing_chunk_files(store, name, end):
            problems.append(f"feature {name!r}: frames {first}..{last}: chunk file {key} is missing")
    return problems


def _check_metadata(store: TrajectoryStore) -> tuple[list[str], np.ndarray]:
    n, frames = store.num_episodes, store.num_frames
    problems = _short_meta(store)
    if problems:
        return problems, np.zeros(0, np.int64)
    ends = store.episode_ends()
    lengths = np.asarray(store.array("meta/length")[:n])
    starts = np.concatenate([[0], ends[:-1]])
    if n and (np.any(ends - starts <= 0) or ends[-1] != frames):
        problems.append(
            f"meta/episode_ends: not strictly increasing up to {frames} frames ({ends.tolist()[:10]}...)"
        )
    bad = np.flatnonzero(lengths != ends - starts)
    if len(bad):
        problems.append(f"meta/length disagrees with meta/episode_ends for episodes {bad.tolist()[:20]}")
    for name in layout.TEXT_COLUMNS:
        try:
            texts = read_text(store._root[f"meta/{name}"], n)
            if name == "extra":
                for text in texts:
                    json.loads(text)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            problems.append(f"meta/{name}: unreadable ({type(exc).__name__}: {exc})")
    return problems, ends


def _check_feature(store: TrajectoryStore, name: str, ends: np.ndarray) -> list[str]:
    problems, end = _array_problems(store, name)
    unit = layout.read_chunk_frames(store.array(f"data/{name}"))
    for start in range(0, end, unit):
        stop = min(start + unit, end)
        where = f"feature {name!r}: frames {start}..{stop - 1} ({_episodes_touching(ends, start, stop)})"
        try:
            block = store.read_rows(name, start, stop)  # a missing chunk file raises, naming it
        except StoreError as exc:
            problems.append(f"{where}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a corrupt chunk can fail in any codec
            problems.append(f"{where}: chunk unreadable ({type(exc).__name__}: {exc})")
            continue
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            problems.append(f"{where}: contains NaN or infinite values")
    return problems


def validate_store(path: str | os.PathLike[str]) -> list[str]:
    """Every problem found in the store at ``path`` (an empty list means valid)."""
    try:
        store = TrajectoryStore.open(path, mode="r")
    except (StoreError, ValueError, KeyError, zarr.errors.BaseZarrError, OSError) as exc:
        return [f"cannot open the store: {exc}"]
    try:
        problems, ends = _check_metadata(store)
    except Exception as exc:  # noqa: BLE001
        return [f"episode metadata unreadable ({type(exc).__name__}: {exc})"]
    for name in store.schema.features:
        try:
            problems += _check_feature(store, name, ends)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"feature {name!r}: array unreadable ({type(exc).__name__}: {exc})")
    return problems
