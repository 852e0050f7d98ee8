"""Storage-locality sampling: a random training order that still reads each decoded storage chunk many times.

"Chunk" here is the store's storage chunk (a run of frames of one feature, compressed and checksummed
as one unit; see :mod:`vla.data.layout`), not a policy's action chunk. Plain shuffling makes every
sample touch a different storage chunk, and a chunk read costs milliseconds.
:class:`StorageLocalitySampler` shuffles *groups* of frames that share storage chunks, takes
``groups_in_flight`` random groups at a time and shuffles their samples together, so a batch
still mixes several distant parts of the store while the chunk cache serves most reads.
With ``num_workers`` DataLoader workers it interleaves one stream per worker batch by batch
(DataLoader hands batch ``k`` to worker ``k % num_workers``), so workers do not decode the same
chunks twice. Training reads through :func:`vla.data.loader.make_dataloader` (its ``chunks`` order).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from vla.data.dataset import TrajectoryDataset

# Storage chunks per group. A window of history frames reaches into the previous chunk, so a group of
# k adjacent chunks decodes k + 1: k = 2 reads 1.5 frames per frame used, k = 4 reads 1.25.
# Groups hold about GROUP_BYTES of each camera, as two chunks of the earlier 2 MB image layout
# did: images are now chunked in about 1 MB (see vla.data.layout), so a group is 4 chunks and
# the same frames as before (128 of 96x96), and a store written with the earlier layout keeps its
# groups of 2 chunks. Larger groups mean fewer distinct places per batch and a larger cache
# working set (groups_in_flight * (k + 1) chunks per camera must stay cached), so k is lowered
# further until that working set fits the dataset's cache.
GROUP_CHUNKS = 4  # at most
MIN_GROUP_CHUNKS = 2  # while the cache allows
GROUP_BYTES = 4 << 20
CACHE_FILL = 0.75  # the share of the decoded-chunk cache the working set may take


def group_chunks(dataset: TrajectoryDataset, groups_in_flight: int) -> int:
    """Storage chunks per sampling group: about :data:`GROUP_BYTES` per camera, while the working set
    fits the cache."""
    largest = dataset.largest_image_storage_chunk_bytes
    k = GROUP_CHUNKS if largest == 0 else int(np.clip(GROUP_BYTES // largest, MIN_GROUP_CHUNKS, GROUP_CHUNKS))
    while (
        k > 1
        and groups_in_flight * (k + 1) * dataset.image_storage_chunk_bytes > CACHE_FILL * dataset.cache_bytes
    ):
        k -= 1
    return k


class StorageLocalitySampler(Sampler[int]):
    """Sample indices of a :class:`TrajectoryDataset` in a random order that keeps storage locality.

    Each epoch (``set_epoch``, or automatically on each iteration) draws a new order from ``seed``.
    ``rank``/``world_size`` split the groups between data-parallel processes, each yielding the
    same number of samples.
    """

    def __init__(
        self,
        dataset: TrajectoryDataset,
        *,
        batch_size: int = 1,
        num_workers: int = 0,
        groups_in_flight: int = 4,
        group_frames: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.batch_size = max(1, batch_size)
        self.streams = max(1, num_workers)
        self.groups_in_flight = max(1, groups_in_flight)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        frames = group_frames or dataset.storage_chunk_frames * group_chunks(dataset, self.groups_in_flight)
        self._group = dataset.anchor_frame // frames
        self._group_ids, self._group_of_sample = np.unique(self._group, return_inverse=True)
        counts = np.bincount(self._group_of_sample, minlength=len(self._group_ids))
        self._per_rank = (
            min(int(counts[r::world_size].sum()) for r in range(world_size)) if len(counts) else 0
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._per_rank if self.world_size > 1 else len(self._group)

    def _order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = rng.permutation(len(self._group_ids))
        # Samples of each group, in a random order within the group.
        shuffled = rng.permutation(len(self._group_of_sample))
        by_group = shuffled[np.argsort(self._group_of_sample[shuffled], kind="stable")]
        bounds = np.searchsorted(self._group_of_sample[by_group], np.arange(len(self._group_ids) + 1))
        mine = groups[self.rank :: self.world_size]
        streams = []
        for stream in range(self.streams):
            owned = mine[stream :: self.streams]
            parts = []
            for i in range(0, len(owned), self.groups_in_flight):
                block = np.concatenate(
                    [by_group[bounds[g] : bounds[g + 1]] for g in owned[i : i + self.groups_in_flight]]
                )
                parts.append(rng.permutation(block))
            streams.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
        order = _interleave_batches(streams, self.batch_size)
        return order[: len(self)] if self.world_size > 1 else order

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        self.epoch += 1
        return iter(order.tolist())


def _interleave_batches(streams: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Batch 0 of stream 0, batch 0 of stream 1, ..., batch 1 of stream 0, ... (then leftovers)."""
    if len(streams) == 1:
        return streams[0]
    pieces = []
    longest = max(len(s) for s in streams)
    for offset in range(0, longest, batch_size):
        pieces += [s[offset : offset + batch_size] for s in streams]
    return np.concatenate(pieces)
