"""Direct reads of one stored chunk: shard index + chunk bytes, CRC32C check, Blosc decode.

Reading a chunk through zarr's public API costs milliseconds on top of the decode itself: zarr 3
runs every read as coroutines on its own event-loop thread (store lookups, codec pipeline, a hand-off
to that thread and back). Our arrays use one fixed, simple codec pipeline (bytes,
Blosc, CRC32C; images inside a sharding codec with its index at the end), so for local stores
:class:`ChunkFileReader` reads a chunk with two ``pread`` calls on one open file and decodes it
straight into a numpy array. The format stays plain Zarr v3: any other pipeline, and fsspec
(non-local) stores, go through zarr (:func:`chunk_reader` returns None for those).

A concurrent writer replaces a shard file atomically, so an open file descriptor keeps reading one
version of the file, and every version made after a reader opened holds the frames that reader
may ask for (those committed then). So each shard is opened, and its index read and checked,
once, and then serves all its chunks (measured: the open, ``fstat`` and index read per chunk cost
as much Python time as the copy). A checksum mismatch closes the file and is retried on a fresh
open (a non-atomic rewrite can still be caught mid-way; :mod:`vla.data.retry`), then raised as
:class:`StoreCorruptError` naming the feature, the frames and the file.

Every chunk holding committed frames exists: the store writes chunks even when they equal the fill
value (:mod:`vla.data.store`), so a missing shard file, or a shard index that says a committed chunk
was never written, is damage and raises :class:`StoreCorruptError`; it is never read as zeros.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import numpy as np
import zarr
from numcodecs import blosc

from vla.data.errors import StoreCorruptError
from vla.data.retry import with_read_retries

_PIECE_BYTES = 256 << 10  # raw chunks are read and checksummed in pieces of this size
_INDEX_ENTRY_BYTES = 16  # (offset, nbytes) as little-endian uint64
_EMPTY = np.uint64(2**64 - 1)  # shard index entry of a chunk that was never written
OPEN_FILES = 32  # shard files each reader keeps open (least recently used closed first)
_BLOSC_HEADER = 16  # Blosc 1 frame header: version, flags, typesize, nbytes, blocksize, cbytes
_BLOSC_MEMCPYED = 0x02  # flag: the frame holds the raw bytes after the header


def _crc_ok(data: memoryview) -> bool:
    """Whether the trailing 4 bytes are the little-endian CRC32C of the rest."""
    view = np.frombuffer(data, dtype=np.uint8)  # google_crc32c takes arrays, not memoryviews
    return google_crc32c.value(view[:-4]) == int.from_bytes(data[-4:], "little")


def _is_our_chunk_pipeline(codecs: list[dict]) -> bool:
    names = [c.get("name") for c in codecs]
    if names != ["bytes", "blosc", "crc32c"]:
        return False
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    return endian == "little" or np.little_endian is False and endian == "big"


class _Unreadable(Exception):
    """A shard whose index cannot be trusted (too short, or its checksum fails)."""


class _ChecksumMismatch(Exception):
    """A chunk (or its shard's index) failed its checksum: read it again from a fresh open."""


class _OpenFile(NamedTuple):
    """A chunk file a reader holds open, with what it checked when opening it."""

    fd: int
    data_end: int  # where chunk bytes end: the index's start in a shard, else the file size
    entries: np.ndarray | None  # (chunks_per_file, 2) offset, nbytes; None when not sharded


@dataclass
class ChunkFileReader:
    """Decodes the read units (inner chunks when sharded) of one local zarr array of this store."""

    directory: Path  # the array's directory
    feature: str  # for error messages
    chunk_shape: tuple[int, ...]
    dtype: np.dtype
    chunks_per_file: int  # inner chunks per shard; 1 when the array is not sharded
    array: zarr.Array
    _buffer: bytearray = field(default_factory=bytearray, repr=False)  # reused: no fresh pages per read
    _open: OrderedDict[int, _OpenFile] = field(default_factory=OrderedDict, repr=False)  # by file number

    def close(self, _close_fd: Callable[[int], None] = os.close) -> None:
        """Close every shard file this reader holds open."""
        # os.close is bound when the class is defined: a reader collected at interpreter exit may run
        # after the os module's globals were cleared (os is None by then).
        handles = getattr(self, "_open", None)  # absent when __init__ failed
        while handles:
            _close_fd(handles.popitem()[1].fd)

    def __del__(self) -> None:
        self.close()

    def _forget(self, file_number: int) -> None:
        handle = self._open.pop(file_number, None)
        if handle is not None:
            os.close(handle.fd)

    def _handle(self, file_number: int, path: Path) -> _OpenFile | None:
        """The open file with its checked index; None if the index fails its checksum.
        Raises FileNotFoundError for a shard never written."""
        handle = self._open.get(file_number)
        if handle is not None:
            self._open.move_to_end(file_number)
            return handle
        fd = os.open(path, os.O_RDONLY)
        try:
            data_end = os.fstat(fd).st_size
            entries = None
            if self.chunks_per_file > 1:
                index_bytes = self.chunks_per_file * _INDEX_ENTRY_BYTES + 4
                if data_end < index_bytes:
                    raise _Unreadable
                data_end -= index_bytes
                raw = memoryview(os.pread(fd, index_bytes, data_end))
                if not _crc_ok(raw):
                    raise _Unreadable
                entries = np.frombuffer(raw, dtype="<u8", count=2 * self.chunks_per_file).reshape(-1, 2)
        except _Unreadable:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        self._open[file_number] = handle = _OpenFile(fd, data_end, entries)
        while len(self._open) > OPEN_FILES:
            os.close(self._open.popitem(last=False)[1].fd)
        return handle

    @property
    def chunk_frames(self) -> int:
        return self.chunk_shape[0]

    def _file(self, index: int) -> Path:
        coords = (index // self.chunks_per_file,) + (0,) * (len(self.chunk_shape) - 1)
        return self.directory / self.array.metadata.encode_chunk_key(coords)

    def _pread(self, fd: int, size: int, offset: int) -> memoryview:
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        view = memoryview(self._buffer)[:size]
        if os.preadv(fd, [view], offset) != size:
            raise OSError(f"short read of {size} bytes at {offset}")
        return view

    def _decode(self, data: memoryview, index: int, path: Path, out: np.ndarray) -> np.ndarray:
        try:
            blosc.decompress(data[:-4], out)
        except Exception as exc:  # noqa: BLE001 - a damaged frame fails in the codec
            raise self._corrupt(index, path, f"Blosc decode failed ({exc})") from exc
        return out

    def _read_frame(
        self, fd: int, offset: int, nbytes: int, index: int, path: Path, out: np.ndarray | None
    ) -> np.ndarray | None:
        """Decode the Blosc frame + CRC32C at bytes ``[offset, offset + nbytes)``; None if the CRC fails."""
        if out is None or out.shape != self.chunk_shape or out.dtype != self.dtype:
            out = np.empty(self.chunk_shape, dtype=self.dtype)
        payload = out.reshape(-1).view(np.uint8)
        header = os.pread(fd, _BLOSC_HEADER, offset)
        if (
            len(header) == _BLOSC_HEADER
            and header[2] & _BLOSC_MEMCPYED
            and int.from_bytes(header[4:8], "little") == payload.nbytes
            and nbytes == _BLOSC_HEADER + payload.nbytes + 4
        ):
            # Stored uncompressed (Blosc gave up on noisy images): read the pixels straight into
            # the output, one copy instead of a read, a checksum pass and a decode copy. Read in
            # pieces that fit the CPU cache and checksum each while it is there, so the checksum
            # does not read the chunk from memory a second time.
            crc = google_crc32c.value(np.frombuffer(header, np.uint8))
            view, start = memoryview(payload), offset + _BLOSC_HEADER
            for a in range(0, payload.nbytes, _PIECE_BYTES):
                piece = view[a : a + _PIECE_BYTES]
                if os.preadv(fd, [piece], start + a) != len(piece):
                    return None
                crc = google_crc32c.extend(crc, payload[a : a + _PIECE_BYTES])
            tail = os.pread(fd, 4, start + payload.nbytes)
            return out if len(tail) == 4 and crc == int.from_bytes(tail, "little") else None
        data = self._pread(fd, nbytes, offset)
        return self._decode(data, index, path, out) if _crc_ok(data) else None

    def _corrupt(self, index: int, path: Path, problem: str) -> StoreCorruptError:
        first = index * self.chunk_frames
        return StoreCorruptError(
            f"feature {self.feature!r}: frames {first}..{first + self.chunk_frames - 1} "
            f"(chunk file {path}): {problem}"
        )

    def _read_once(self, index: int, out: np.ndarray | None) -> np.ndarray:
        """The decoded chunk; raises :class:`_ChecksumMismatch` for the caller to retry."""
        path = self._file(index)
        file_number = index // self.chunks_per_file
        try:
            handle = self._handle(file_number, path)
        except FileNotFoundError:
            raise self._corrupt(index, path, "chunk file missing") from None
        if handle is None:
            raise _ChecksumMismatch
        fd, data_end, entries = handle
        if entries is None:
            chunk = self._read_frame(fd, 0, data_end, index, path, out)
        else:
            offset, nbytes = entries[index % self.chunks_per_file]
            if offset == _EMPTY and nbytes == _EMPTY:
                raise self._corrupt(index, path, "chunk missing (its shard index says it was never written)")
            if offset + nbytes > data_end:
                chunk = None
            else:
                chunk = self._read_frame(fd, int(offset), int(nbytes), index, path, out)
        if chunk is None:
            self._forget(file_number)  # the retry opens the file afresh
            raise _ChecksumMismatch
        return chunk

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read unit ``index`` (frames ``index * chunk_frames ...``), decoded, with its full shape.

        ``out`` is a spare array to decode into (used when its shape and dtype fit).
        """
        try:
            return with_read_retries(lambda: self._read_once(index, out), (_ChecksumMismatch,))
        except _ChecksumMismatch:
            raise self._corrupt(index, self._file(index), "CRC32C checksum mismatch (corrupt data)") from None


def chunk_reader(array: zarr.Array, store_path: str, feature: str) -> ChunkFileReader | None:
    """A direct reader of ``array`` of the store at local ``store_path``, or None to use zarr.

    None for remote stores and for any layout other than the one :mod:`vla.data.layout` writes.
    """
    from vla.data.store import _local_path, is_remote

    if is_remote(store_path):
        return None
    meta = array.metadata.to_dict()
    codecs = list(meta.get("codecs", []))
    if meta.get("chunk_key_encoding", {}).get("name") != "default":
        return None
    chunks_per_file = 1
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        config = codecs[0]["configuration"]
        index_names = [c.get("name") for c in config.get("index_codecs", [])]
        if config.get("index_location", "end") != "end" or index_names != ["bytes", "crc32c"]:
            return None
        if not _is_our_chunk_pipeline(config["codecs"]):
            return None
        inner = tuple(int(n) for n in config["chunk_shape"])
        outer = tuple(int(n) for n in array.shards)
        if any(o != i for o, i in zip(outer[1:], inner[1:], strict=True)):
            return None  # sharded along time only
        chunks_per_file = outer[0] // inner[0]
    elif _is_our_chunk_pipeline(codecs):
        inner = tuple(int(n) for n in array.chunks)
        if any(c != s for c, s in zip(inner[1:], array.shape[1:], strict=True)):
            return None  # chunked along time only
    else:
        return None
    return ChunkFileReader(
        directory=_local_path(store_path) / array.path,
        feature=feature,
        chunk_shape=inner,
        dtype=np.dtype(array.dtype),
        chunks_per_file=chunks_per_file,
        array=array,
    )
