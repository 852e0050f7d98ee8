"""Reading committed rows of a feature: the one read path of every reader of a store.

Training (:mod:`vla.data.cache`), ``read_episode``, statistics, validation and the exporters all
read feature rows chunk by chunk through a :class:`ChunkReader`: the direct
:class:`~vla.data.chunks.ChunkFileReader` for local stores in the layout :mod:`vla.data.layout`
writes, else :class:`ZarrChunkReader` (remote stores, other layouts). Both raise
:class:`~vla.data.errors.StoreCorruptError` naming the feature, the frames and the file for a chunk
that is missing, fails its checksum or does not decode, after the retries of :mod:`vla.data.retry`.
Zarr itself would hand back the fill value for a missing chunk: a deleted image shard then trained
as black frames, silently.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import zarr
from zarr.core.sync import sync

from vla.data import chunks, layout
from vla.data.errors import StoreCorruptError
from vla.data.retry import with_read_retries


class ChunkReader(Protocol):
    """Reads one feature's read units (inner chunks when sharded), decoded."""

    feature: str
    chunk_shape: tuple[int, ...]
    dtype: np.dtype

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read unit ``index``; at least its rows below the array's end (``out``: a buffer to fill)."""
        ...


class ZarrChunkReader:
    """A :class:`ChunkReader` through zarr's API, refusing chunks whose file is missing.

    Zarr reads a missing chunk as its fill value, so the chunk's file is looked up first (once
    per file: a file of committed frames is replaced atomically, never removed). A shard whose
    index says a committed inner chunk was never written is caught only by the direct reader.
    """

    def __init__(self, array: zarr.Array, feature: str) -> None:
        self.array = array
        self.feature = feature
        self.chunk_shape = tuple(int(n) for n in array.chunks)
        self.dtype = np.dtype(array.dtype)
        self._chunks_per_file = layout.stored_file_frames(array) // self.chunk_shape[0]
        self._present: set[str] = set()

    def _key(self, index: int) -> str:
        coords = (index // self._chunks_per_file,) + (0,) * (len(self.chunk_shape) - 1)
        return f"{self.array.path}/{self.array.metadata.encode_chunk_key(coords)}"

    def _where(self, index: int) -> str:
        first = index * self.chunk_shape[0]
        return f"feature {self.feature!r}: frames {first}..{first + self.chunk_shape[0] - 1} (chunk file {self._key(index)})"

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        key = self._key(index)
        if key not in self._present:
            if not sync(self.array.store.exists(key)):
                raise StoreCorruptError(f"{self._where(index)}: chunk file missing")
            self._present.add(key)
        size = self.chunk_shape[0]
        start = index * size
        stop = min(start + size, self.array.shape[0])
        try:
            # A checksum failure (ValueError) or a codec failure (RuntimeError) may be a concurrent
            # rewrite caught mid-way: read again before calling it corrupt.
            rows = with_read_retries(lambda: np.asarray(self.array[start:stop]), (ValueError, RuntimeError))
        except (ValueError, RuntimeError) as exc:
            raise StoreCorruptError(
                f"{self._where(index)}: unreadable ({type(exc).__name__}: {exc})"
            ) from exc
        if out is None or out.shape != self.chunk_shape or out.dtype != self.dtype:
            return rows
        out[: len(rows)] = rows
        return out


def reader_for(array: zarr.Array, store_path: str, feature: str) -> ChunkReader:
    """The reader of ``array`` (feature ``feature`` of the store at ``store_path``): direct if possible."""
    direct = chunks.chunk_reader(array, store_path, feature)
    return direct if direct is not None else ZarrChunkReader(array, feature)


def read_rows(reader: ChunkReader, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of the reader's feature (the caller keeps them below the committed end)."""
    size = reader.chunk_shape[0]
    out = np.empty((max(stop - start, 0), *reader.chunk_shape[1:]), dtype=reader.dtype)
    for index in range(start // size, -(-stop // size)):
        first = index * size
        lo, hi = max(start, first), min(stop, first + size)
        out[lo - start : hi - start] = reader.read(index)[lo - first : hi - first]
    return out
