"""Which samples each process trains on at each step: a pure function of (seed, epoch, step).

Because the order never depends on what happened before, resuming at step ``s`` needs only ``s``:
the resumed run sees exactly the batches the uninterrupted run would have seen.

Every step consumes one *global* batch of ``batch_size * world_size`` consecutive entries of the
epoch's order; rank ``r`` takes the ``r``-th contiguous slice (DistributedSampler-style sharding that
keeps the locality of a chunk-aware order). The last incomplete global batch of an epoch is dropped
so every rank always does the same number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import Sampler

# (seed, epoch) -> a permutation of range(num_samples).
OrderFn = Callable[[int, int], np.ndarray]


def random_order(num_samples: int) -> OrderFn:
    """Uniform shuffling, a fresh permutation per epoch."""

    def order(seed: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(num_samples)

    return order


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's index batch for steps ``start_step .. end_step - 1``."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        end_step: int,
        rank: int = 0,
        world_size: int = 1,
        order_fn: OrderFn | None = None,
    ) -> None:
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise ValueError(
                f"the training set has {num_samples} windows, fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower train.batch_size or record more data"
            )
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.world_size = rank, world_size
        self.order_fn = order_fn or random_order(num_samples)
        self.batches_per_epoch = num_samples // self.global_batch
        self._cached: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        """The epoch that step ``step`` belongs to."""
        return step // self.batches_per_epoch

    def _order(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            order = np.asarray(self.order_fn(self.seed, epoch))
            if order.shape != (self.num_samples,):
                raise ValueError(f"order_fn returned shape {order.shape}, expected ({self.num_samples},)")
            self._cached = (epoch, order)
        return self._cached[1]

    def batch_for_step(self, step: int) -> list[int]:
        """This rank's sample indices at ``step``."""
        order = self._order(self.epoch_of(step))
        start = (step % self.batches_per_epoch) * self.global_batch + self.rank * self.batch_size
        return [int(i) for i in order[start : start + self.batch_size]]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)
