"""Frame sources for training reads: a bounded cache of decoded zarr (storage) chunks, or plain arrays.

Decoding a storage chunk costs far more than copying a few frames out of it, so the store source
decodes whole chunks (about 1 MB) and keeps the most recently used ones up to a byte budget: samples
drawn near each other in time (:class:`vla.data.sampler.StorageLocalitySampler`) then cost an array
index, and memory stays bounded however large the store is. Both sources fill a whole batch of
windows at once (:meth:`gather`), visiting each chunk once per batch.

Where the time went (one process, warm page cache, 96x96 cameras): a cache that allocated a fresh
buffer for every chunk until its 512 MiB budget was full paid first-touch page faults on nearly
every read (several ms per chunk on a virtual machine, against about 0.3 ms to read and check
one), and copying each window run by run from its chunk cost a Python step per run. Now the
cache grows only when a larger one would have hit (:class:`ChunkCache`), evicted chunks' memory
is reused, the first part of it is mapped when the source opens, and every cached chunk lives in
one array per shape (:class:`_Arena`) so a batch is copied with one ``np.take``, as from memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

from vla.data.store import TrajectoryStore

DEFAULT_CACHE_BYTES = 512 << 20
INITIAL_CACHE_BYTES = 64 << 20  # where a cache starts before it has seen that more would help


class ChunkCache:
    """Least-recently-used decoded chunks, at most ``max_bytes`` in total (one chunk always fits).

    The cache grows only where growing pays: it starts at ``initial_bytes`` (or ``max_bytes`` if
    smaller) and remembers the keys it evicted ("ghosts", as in ARC) for as many bytes as it may
    still grow; a miss on a ghost is a miss a larger cache would have hit, and grows the limit by
    that chunk. Misses on chunks never seen (most of them under the storage-locality sampler, whose
    working set is small) evict and reuse memory instead: on virtual machines first-touching a
    fresh MB-sized buffer costs several times more than decoding into one already mapped
    (0.7-4.6 ms against 0.1 ms per 1.7 MB measured), so a cache that grew to its whole budget
    before reusing anything paid that on most reads.

    Each evicted array is handed to ``release(key, array)`` when given (:class:`StoreFrames`
    returns its arena slot for the next load to decode into). A chunk handed out by :meth:`get`
    is valid until the next :meth:`get`.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        initial_bytes: int = INITIAL_CACHE_BYTES,
        release: Callable[[tuple[str, int], np.ndarray], None] | None = None,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.limit = min(self.max_bytes, int(initial_bytes))  # the current budget, grows on ghost hits
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._ghosts: OrderedDict[tuple[str, int], int] = OrderedDict()  # evicted key -> nbytes
        self._ghost_bytes = 0
        self._release = release
        self.nbytes = 0
        self.hits = self.misses = self.ghost_hits = 0

    def get(self, key: tuple[str, int], load: Callable[[], np.ndarray]) -> np.ndarray:
        """The chunk at ``key``, from the cache or else ``load()``."""
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            self.hits += 1
            return chunk
        self.misses += 1
        ghost = self._ghosts.pop(key, None)
        if ghost is not None:
            self._ghost_bytes -= ghost
            self.ghost_hits += 1
            self.limit = min(self.max_bytes, self.limit + ghost)
        chunk = load()
        self._chunks[key] = chunk
        self.nbytes += chunk.nbytes
        while self.nbytes > self.limit and len(self._chunks) > 1:
            evicted_key, evicted = self._chunks.popitem(last=False)
            self.nbytes -= evicted.nbytes
            if self._release is not None:
                self._release(evicted_key, evicted)
            self._ghosts[evicted_key] = evicted.nbytes
            self._ghost_bytes += evicted.nbytes
        while self._ghost_bytes > self.max_bytes - self.limit and self._ghosts:
            self._ghost_bytes -= self._ghosts.popitem(last=False)[1]
        return chunk


class _Arena:
    """Slots for decoded chunks of one shape and dtype, all rows of one array.

    Holding every cached chunk of a shape in one array lets :meth:`StoreFrames.gather` copy a
    whole batch of windows with one ``np.take``, like the in-memory source, instead of a Python
    loop over runs of rows. The array is allocated for as many chunks as the cache budget can
    ever hold (at most every chunk of the arrays it serves); the operating system backs only the
    pages of slots actually used, and freed slots are reused first, so the memory touched follows
    the cache's current limit, not its budget.
    """

    def __init__(self, chunk_shape: tuple[int, ...], dtype: np.dtype, max_bytes: int, chunks: int) -> None:
        nbytes = max(1, int(np.prod(chunk_shape, dtype=np.int64)) * dtype.itemsize)
        # The budget's worth, +1 (one chunk always fits) and +1 (a load happens before eviction).
        self.slots = min(max_bytes // nbytes, chunks) + 2
        self.data = np.empty((self.slots, *chunk_shape), dtype=dtype)
        self.rows = self.data.reshape(self.slots * chunk_shape[0], *chunk_shape[1:])
        self._free = list(range(self.slots - 1, -1, -1))  # slot 0 first

    def take(self) -> int:
        return self._free.pop()

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    def touch(self, nbytes: int) -> None:
        """Map the first ``nbytes`` of slots now (page faults at start-up, not during reads)."""
        slots = min(self.slots, -(-nbytes // max(1, self.data[0].nbytes)))
        self.data[:slots].reshape(-1).view(np.uint8)[::4096] = 0


class StoreFrames:
    """Rows of store features read chunk by chunk through a :class:`ChunkCache`.

    Chunks come from the store's readers (:mod:`vla.data.rows`: direct file reads for local
    stores, zarr otherwise), so a missing or corrupt chunk raises instead of reading as zeros.
    ``end`` is the committed frame count: rows at or past it are never asked for.
    """

    def __init__(
        self,
        store: TrajectoryStore,
        keys: Iterable[str],
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        end: int | None = None,
    ) -> None:
        self._arrays = {key: store.array(f"data/{key}") for key in keys}
        self._readers = {key: store.reader(key) for key in self._arrays}
        self._chunk = {key: int(array.chunks[0]) for key, array in self._arrays.items()}
        self._end = store.num_frames if end is None else int(end)
        self.cache = ChunkCache(cache_bytes, release=self._release)
        # Keys whose chunks have the same shape and dtype share one arena (the cache budget is shared).
        kinds: dict[str, tuple[tuple[int, ...], str]] = {}
        chunks: dict[tuple[tuple[int, ...], str], int] = {}
        for key, array in self._arrays.items():
            kinds[key] = ((self._chunk[key], *array.shape[1:]), np.dtype(array.dtype).str)
            chunks[kinds[key]] = chunks.get(kinds[key], 0) + -(-self._end // self._chunk[key])
        arenas = {
            kind: _Arena(kind[0], np.dtype(kind[1]), self.cache.max_bytes, n) for kind, n in chunks.items()
        }
        self._arena = {key: arenas[kind] for key, kind in kinds.items()}
        self._slot: dict[tuple[str, int], int] = {}  # cached chunk -> its slot in its arena
        for arena in arenas.values():
            arena.touch(self.cache.limit)

    def chunk_frames(self, key: str) -> int:
        return self._chunk[key]

    def _release(self, cache_key: tuple[str, int], chunk: np.ndarray) -> None:
        self._arena[cache_key[0]].give_back(self._slot.pop(cache_key))

    def _load(self, key: str, index: int) -> np.ndarray:
        """Chunk ``index`` of ``key``, decoded into a free slot of its arena."""
        arena = self._arena[key]
        slot = arena.take()
        out = arena.data[slot]
        try:
            chunk = self._readers[key].read(index, out)
            if chunk is not out:  # the decode could not use the slot (another shape or dtype)
                out[: len(chunk)] = chunk
        except BaseException:
            arena.give_back(slot)
            raise
        self._slot[key, index] = slot
        return out

    def _chunk_of(self, key: str, index: int) -> np.ndarray:
        return self.cache.get((key, index), lambda: self._load(key, index))

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
        # Make every chunk of the batch resident, then copy all rows with one take from the arena
        # (rows of a slot: slot * size + row within the chunk).
        needed = np.unique(chunk_ids)
        for index in needed.tolist():
            self._chunk_of(key, index)
        slots = [self._slot.get((key, index), -1) for index in needed.tolist()]
        if min(slots) >= 0:  # none evicted by a later load of the same batch
            slots = np.asarray(slots, dtype=np.int64)
            arena = self._arena[key]
            arena_rows = slots[np.searchsorted(needed, chunk_ids)] * size + (flat - chunk_ids * size)
            np.take(arena.rows, arena_rows, axis=0, out=dest, mode="clip")
            return
        self._gather_by_chunk(key, flat, chunk_ids, dest)  # a cache smaller than one batch's chunks

    def _gather_by_chunk(self, key: str, flat: np.ndarray, chunk_ids: np.ndarray, dest: np.ndarray) -> None:
        """The copy one chunk at a time, for caches too small to hold all chunks of a batch."""
        size = self._chunk[key]
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
