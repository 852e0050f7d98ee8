"""``validate_store``: check a store end to end and report every problem found.

Checks the commit record and schema, each array's dtype, shape and length, the episode boundaries
and per-episode metadata, and that every chunk of every feature exists and decodes (CRC32C
verified) with finite values. A bad chunk is reported with its feature, frames and episodes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import zarr
from zarr.core.sync import sync

from vla.data import layout
from vla.data.errors import StoreError
from vla.data.store import TrajectoryStore, read_block, read_text


def _episodes_touching(ends: np.ndarray, start: int, stop: int) -> str:
    first = int(np.searchsorted(ends, start, side="right"))
    last = int(np.searchsorted(ends, stop - 1, side="right"))
    last = min(last, len(ends) - 1)
    return f"episode {first}" if first == last else f"episodes {first}..{last}"


def _check_metadata(store: TrajectoryStore) -> tuple[list[str], np.ndarray]:
    problems = []
    n, frames = store.num_episodes, store.num_frames
    for name in layout.NUMERIC_META:
        if store.array(f"meta/{name}").shape[0] < n:
            problems.append(
                f"meta/{name}: {store.array(f'meta/{name}').shape[0]} entries, {n} episodes committed"
            )
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
    spec = store.schema.features[name]
    array = store.array(f"data/{name}")
    problems = []
    if array.dtype != np.dtype(spec.dtype) or tuple(array.shape[1:]) != spec.shape:
        problems.append(
            f"feature {name!r}: array is {array.dtype} {array.shape[1:]}, schema says {spec.dtype} {spec.shape}"
        )
        return problems
    end = store.num_frames
    if array.shape[0] < end:
        problems.append(f"feature {name!r}: {array.shape[0]} frames stored, {end} committed")
        end = array.shape[0]
    unit = int(array.chunks[0])
    file_frames = int(array.shards[0]) if array.shards is not None else unit
    for start in range(0, end, unit):
        stop = min(start + unit, end)
        where = f"feature {name!r}: frames {start}..{stop - 1} ({_episodes_touching(ends, start, stop)})"
        key = array.metadata.encode_chunk_key((start // file_frames,) + (0,) * len(spec.shape))
        if not sync(array.store.exists(f"{array.path}/{key}")):
            problems.append(f"{where}: chunk file {array.path}/{key} is missing")
            continue
        try:
            block = read_block(array, start, stop)
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
