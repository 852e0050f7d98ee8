"""Frame sources for training reads: a bounded cache of decoded zarr chunks, or plain arrays.

Reading one chunk through zarr costs milliseconds however few frames are wanted, so the store
source decodes whole chunks (a few MB) and keeps the most recently used ones up to a byte budget:
samples drawn near each other in time (see :class:`vla.data.sampler.ChunkAwareSampler`) then cost
an array index, and memory stays bounded however large the store is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

from vla.data.store import TrajectoryStore, read_block

DEFAULT_CACHE_BYTES = 512 << 20


class ChunkCache:
    """Least-recently-used decoded chunks, at most ``max_bytes`` in total (one chunk always fits)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int], load: Callable[[], np.ndarray]) -> np.ndarray:
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            self.hits += 1
            return chunk
        self.misses += 1
        chunk = load()
        self._chunks[key] = chunk
        self.nbytes += chunk.nbytes
        while self.nbytes > self.max_bytes and len(self._chunks) > 1:
            _, evicted = self._chunks.popitem(last=False)
            self.nbytes -= evicted.nbytes
        return chunk


class StoreFrames:
    """Rows of store features read chunk by chunk through a :class:`ChunkCache`."""

    def __init__(
        self, store: TrajectoryStore, keys: Iterable[str], cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.cache = ChunkCache(cache_bytes)
        self._arrays = {key: store.array(f"data/{key}") for key in keys}
        self._chunk = {key: int(array.chunks[0]) for key, array in self._arrays.items()}
        self._end = store.num_frames

    def chunk_frames(self, key: str) -> int:
        return self._chunk[key]

    def _load(self, key: str, index: int) -> np.ndarray:
        size = self._chunk[key]
        start = index * size
        return read_block(self._arrays[key], start, min(start + size, self._end))

    def rows(self, key: str, rows: np.ndarray) -> np.ndarray:
        """``data[key][rows]`` for sorted global frame indices ``rows``."""
        size = self._chunk[key]
        first, last = int(rows[0]) // size, int(rows[-1]) // size
        if first == last:
            chunk = self.cache.get((key, first), lambda: self._load(key, first))
            return chunk[rows - first * size]
        parts = []
        for row in rows:
            index = int(row) // size
            chunk = self.cache.get((key, index), lambda index=index: self._load(key, index))
            parts.append(chunk[int(row) - index * size])
        return np.stack(parts)


class ArrayFrames:
    """Rows of features held in memory as numpy arrays (small stores, and the benchmark's limit)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays

    def rows(self, key: str, rows: np.ndarray) -> np.ndarray:
        return self._arrays[key][rows]
