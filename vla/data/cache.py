"""Frame sources for training reads: a bounded cache of decoded zarr chunks, or plain arrays.

Decoding a chunk costs far more than copying a few frames out of it, so the store source decodes
whole chunks (a few MB) and keeps the most recently used ones up to a byte budget: samples drawn
near each other in time (see :class:`vla.data.sampler.ChunkAwareSampler`) then cost an array
index, and memory stays bounded however large the store is. Both sources fill a whole batch of
windows at once (:meth:`gather`), visiting each chunk once per batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

from vla.data.chunks import chunk_reader
from vla.data.store import TrajectoryStore, read_block

DEFAULT_CACHE_BYTES = 512 << 20


class ChunkCache:
    """Least-recently-used decoded chunks, at most ``max_bytes`` in total (one chunk always fits).

    The last evicted array is kept as a spare that the next load may decode into: writing into
    memory already mapped is measurably faster than into a fresh allocation. A chunk handed out
    by :meth:`get` is valid until the next :meth:`get`.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._spare: np.ndarray | None = None
        self.nbytes = 0
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int], load: Callable[[np.ndarray | None], np.ndarray]) -> np.ndarray:
        """The chunk at ``key``, or ``load(spare)`` (``spare``: an evicted array, or None)."""
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            self.hits += 1
            return chunk
        self.misses += 1
        spare, self._spare = self._spare, None
        chunk = load(spare)
        self._chunks[key] = chunk
        self.nbytes += chunk.nbytes
        while self.nbytes > self.max_bytes and len(self._chunks) > 1:
            _, evicted = self._chunks.popitem(last=False)
            self.nbytes -= evicted.nbytes
            self._spare = evicted
        return chunk


class StoreFrames:
    """Rows of store features read chunk by chunk through a :class:`ChunkCache`.

    Local stores are read by :class:`vla.data.chunks.ChunkFileReader` (no zarr machinery per
    chunk); remote ones, or unusual layouts, through zarr. ``end`` is the committed frame count:
    rows at or past it are never asked for.
    """

    def __init__(
        self,
        store: TrajectoryStore,
        keys: Iterable[str],
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        end: int | None = None,
    ) -> None:
        self.cache = ChunkCache(cache_bytes)
        self._arrays = {key: store.array(f"data/{key}") for key in keys}
        self._readers = {key: chunk_reader(a, store.path, key) for key, a in self._arrays.items()}
        self._chunk = {key: int(array.chunks[0]) for key, array in self._arrays.items()}
        self._end = store.num_frames if end is None else int(end)

    def chunk_frames(self, key: str) -> int:
        return self._chunk[key]

    def _load(self, key: str, index: int, spare: np.ndarray | None) -> np.ndarray:
        reader = self._readers[key]
        if reader is not None:
            return reader.read(index, spare)
        size = self._chunk[key]
        start = index * size
        return read_block(self._arrays[key], start, min(start + size, self._end))

    def _chunk_of(self, key: str, index: int) -> np.ndarray:
        return self.cache.get((key, index), lambda spare: self._load(key, index, spare))

    def gather(self, key: str, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[...] = data[key][rows]`` for global frame indices ``rows`` of any shape."""
        size = self._chunk[key]
        flat = rows.reshape(-1)
        dest = out.reshape(len(flat), *out.shape[rows.ndim :])
        chunk_ids = flat // size
        first, last = int(chunk_ids.min()), int(chunk_ids.max())
        if first == last:
            np.take(self._chunk_of(key, first), flat - first * size, axis=0, out=dest, mode="clip")
            return
        # Copy runs of consecutive rows within one chunk (about one per window) as slices, one
        # memcpy each (fancy indexing per chunk copies every row twice), chunk by chunk.
        local = flat - chunk_ids * size
        breaks = np.ones(len(flat), dtype=bool)
        breaks[1:] = (chunk_ids[1:] != chunk_ids[:-1]) | (flat[1:] != flat[:-1] + 1)
        starts = np.flatnonzero(breaks)
        lengths = np.diff(np.append(starts, len(flat)))
        run_chunk = chunk_ids[starts]
        order = np.argsort(run_chunk, kind="stable")
        current, chunk = -1, None
        for index, a, n, row in zip(
            run_chunk[order].tolist(),
            starts[order].tolist(),
            lengths[order].tolist(),
            local[starts][order].tolist(),
            strict=True,
        ):
            if index != current:
                current, chunk = index, self._chunk_of(key, index)
            dest[a : a + n] = chunk[row : row + n]


class ArrayFrames:
    """Rows of features held in memory as numpy arrays (small stores, and the benchmark's limit)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays

    def gather(self, key: str, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[...] = data[key][rows]`` for global frame indices ``rows`` of any shape."""
        flat = rows.reshape(-1)
        # mode="clip": rows are already clamped to committed episodes, and "raise" buffers `out`.
        target = out.reshape(len(flat), *out.shape[rows.ndim :])
        np.take(self._arrays[key], flat, axis=0, out=target, mode="clip")
