"""The training DataLoader: :func:`make_dataloader`, the one way ``vla train`` and the data benchmark
read training windows.

Which samples each process reads at each step is a pure function of (seed, epoch, step)
(:class:`StepBatchSampler`), so a run resumed at step ``s`` needs only ``s`` to see exactly the
batches the uninterrupted run would have seen. The order within an epoch is one of
:data:`SAMPLE_ORDERS`:

- ``chunks``: the storage-locality order of :class:`~vla.data.sampler.StorageLocalitySampler`
  (neighbouring frames share decoded storage chunks: fast reads of stores larger than memory);
- ``uniform``: a fresh uniform permutation per epoch (more diverse batches; pair it with
  ``TrajectoryDataset(in_memory=True)``);
- ``tasks``: task-balanced: each sample's task drawn uniformly, then one of that task's windows
  uniformly (with replacement). A frame-uniform order weighs tasks by their episode lengths
  (a tabletop reach lasts ~11 steps, a stack ~120), so short tasks get a sliver of the updates.

A *curriculum* (``curriculum_tasks``, ``curriculum_steps``) draws the first steps' windows only from
the tasks it names (:func:`curriculum_order`), then the chosen order takes over.

Every step consumes one *global* batch of ``batch_size * world_size`` consecutive entries of the
epoch's order; rank ``r`` takes the ``r``-th contiguous slice (DistributedSampler-style sharding that
keeps the locality of the storage-locality order). The last incomplete global batch of an epoch is
dropped so every rank always does the same number of steps.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vla.data.batch import collate_windows

# (seed, epoch) -> a permutation of range(num_samples).
OrderFn = Callable[[int, int], np.ndarray]

SAMPLE_ORDERS = ("chunks", "uniform", "tasks")


def uniform_order(num_samples: int) -> OrderFn:
    """The ``uniform`` order: a fresh permutation of every sample per epoch."""

    def order(seed: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch, 17]).permutation(num_samples)

    return order


def _task_weight(name: str, weights: Mapping[str, float]) -> float:
    """The weight of task ``name`` under ``weights`` (fnmatch pattern -> weight): the first pattern
    that matches, 1.0 when none does."""
    for pattern, weight in weights.items():
        if fnmatch.fnmatchcase(name, pattern):
            return float(weight)
    return 1.0


def task_balanced_order(sample_tasks: Sequence[str], weights: Mapping[str, float] | None = None) -> OrderFn:
    """The ``tasks`` order over samples whose tasks are ``sample_tasks``: every task equally likely
    at every draw (or in proportion to ``weights``, fnmatch pattern -> weight, unmatched tasks 1.0),
    a uniform window within it (one epoch is ``len(sample_tasks)`` draws)."""
    weights = dict(weights or {})
    names, task_of_sample = np.unique(np.asarray(sample_tasks), return_inverse=True)
    members = [np.flatnonzero(task_of_sample == k) for k in range(len(names))]
    size = len(task_of_sample)
    unused = [p for p in weights if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unused:
        raise ValueError(f"task weight patterns {unused} match none of the training tasks {names.tolist()}")
    odds = np.array([_task_weight(str(n), weights) for n in names], dtype=np.float64)
    if not (np.isfinite(odds).all() and (odds >= 0).all() and odds.sum() > 0):
        raise ValueError(f"task weights must be finite, >= 0 and not all 0; got {weights}")
    odds /= odds.sum()

    def order(seed: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, 23])
        # Unweighted draws stay integers(): the same order as before weights existed, for any seed.
        if weights:
            task = rng.choice(len(members), size=size, p=odds)
        else:
            task = rng.integers(len(members), size=size)
        out = np.empty(size, dtype=np.int64)
        for k, windows in enumerate(members):
            drawn = task == k
            out[drawn] = windows[rng.integers(len(windows), size=int(drawn.sum()))]
        return out

    return order


def curriculum_order(sample_tasks: Sequence[str], patterns: Sequence[str]) -> OrderFn:
    """Windows drawn uniformly (with replacement) from the samples whose task matches one of
    ``patterns`` (fnmatch, e.g. ``*reach-*``); one epoch is ``len(sample_tasks)`` draws.

    Why a curriculum: measured on reach + press + pick, a policy trained on every task at once never
    learned to read the colour word (it went to an average of the blocks), while one trained on reach
    alone read it within 1,000 steps, through the FiLM of its vision stem; started on reach, the
    policy keeps reading the colour once the other tasks join.
    """
    tasks = np.asarray(sample_tasks, dtype=str)
    names = np.unique(tasks)
    chosen_names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen_names:
        raise ValueError(
            f"curriculum tasks {list(patterns)} match none of the training tasks {names.tolist()}"
        )
    chosen = np.flatnonzero(np.isin(tasks, chosen_names))
    size = len(tasks)

    def order(seed: int, epoch: int) -> np.ndarray:
        return chosen[np.random.default_rng([seed, epoch, 29]).integers(len(chosen), size=size)]

    return order


def storage_locality_order(dataset: Any, global_batch: int, streams: int) -> OrderFn:
    """The ``chunks`` order: :class:`~vla.data.sampler.StorageLocalitySampler`'s, with ``streams``
    interleaved streams (one per DataLoader worker), as a pure function of (seed, epoch)."""
    from vla.data.sampler import StorageLocalitySampler

    sampler = StorageLocalitySampler(dataset, batch_size=global_batch, num_workers=streams)

    def order(seed: int, epoch: int) -> np.ndarray:
        sampler.seed = seed
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(dataset))

    return order


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's index batch for steps ``start_step .. end_step - 1``; ``order_fn``
    (default :func:`uniform_order`) gives each epoch's order."""

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
        first_order_fn: OrderFn | None = None,
        first_steps: int = 0,
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
        self.order_fn = order_fn or uniform_order(num_samples)
        # Steps < first_steps read first_order_fn's order instead (a curriculum).
        self.first_order_fn, self.first_steps = first_order_fn, first_steps if first_order_fn else 0
        self.batches_per_epoch = num_samples // self.global_batch
        self._cached: tuple[int, bool, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        """The epoch that step ``step`` belongs to."""
        return step // self.batches_per_epoch

    def _order(self, epoch: int, first: bool) -> np.ndarray:
        if self._cached is None or self._cached[:2] != (epoch, first):
            order_fn = self.first_order_fn if first else self.order_fn
            assert order_fn is not None
            order = np.asarray(order_fn(self.seed, epoch))
            if order.shape != (self.num_samples,):
                raise ValueError(f"order_fn returned shape {order.shape}, expected ({self.num_samples},)")
            self._cached = (epoch, first, order)
        return self._cached[2]

    def batch_for_step(self, step: int) -> list[int]:
        """This rank's sample indices at ``step``."""
        order = self._order(self.epoch_of(step), step < self.first_steps)
        start = (step % self.batches_per_epoch) * self.global_batch + self.rank * self.batch_size
        return [int(i) for i in order[start : start + self.batch_size]]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


def _sample_tasks(dataset: Any) -> list[str]:
    """The task of each of ``dataset``'s samples (a :class:`~vla.data.TrajectoryDataset`)."""
    if not hasattr(dataset, "episode_tasks"):
        raise ValueError("order='tasks' needs a dataset that knows its episodes' tasks (TrajectoryDataset)")
    return [dataset.episode_tasks[e] for e in dataset.anchor_episode]


def seed_worker(worker_id: int) -> None:
    """DataLoader worker seeding: derive numpy/python seeds from the torch seed the loader assigned."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    steps: int | None = None,
    start_step: int = 0,
    order: str = "chunks",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    order_streams: int | None = None,
    collate_fn: Callable[[Any], Any] = collate_windows,
    pin_memory: bool = False,
    curriculum_tasks: Sequence[str] = (),
    curriculum_steps: int = 0,
    task_weights: Mapping[str, float] | None = None,
) -> DataLoader:
    """The DataLoader of steps ``start_step .. steps - 1`` (default: one epoch) of ``dataset``.

    ``order`` is one of :data:`SAMPLE_ORDERS`; ``order_streams`` (default ``num_workers``) is the
    number of interleaved streams of the ``chunks`` order, which a resumed run keeps even with
    another worker count so its data order stays the same. ``collate_fn`` defaults to the
    pre-collated window batches of :class:`~vla.data.TrajectoryDataset` (``vla train`` passes its
    :class:`~vla.inputs.Collator`). ``curriculum_tasks`` (task-name patterns) and ``curriculum_steps``
    restrict the first steps to those tasks (:func:`curriculum_order`). Workers start with
    ``forkserver``: zarr runs an event-loop thread, and forking a process with live threads can deadlock.
    """
    if order not in SAMPLE_ORDERS:
        raise ValueError(f"order must be one of {list(SAMPLE_ORDERS)}, got {order!r}")
    size = len(dataset)  # type: ignore[arg-type]
    global_batch = batch_size * world_size
    streams = num_workers if order_streams is None else order_streams
    if curriculum_steps > 0 and not curriculum_tasks:
        raise ValueError("curriculum_steps > 0 needs curriculum_tasks (task-name patterns)")
    if task_weights and order != "tasks":
        raise ValueError(f"task_weights need order='tasks', got order={order!r}")
    # Each sample's task, read once for the orders that need it.
    sample_tasks = _sample_tasks(dataset) if order == "tasks" or curriculum_steps > 0 else []
    if order == "uniform":
        order_fn = uniform_order(size)
    elif order == "tasks":
        order_fn = task_balanced_order(sample_tasks, task_weights)
    else:
        order_fn = storage_locality_order(dataset, global_batch, streams)
    end_step = steps if steps is not None else start_step + size // max(global_batch, 1)
    first_order_fn = curriculum_order(sample_tasks, curriculum_tasks) if curriculum_steps > 0 else None
    sampler = StepBatchSampler(
        size, batch_size, seed=seed, start_step=start_step, end_step=end_step,
        rank=rank, world_size=world_size, order_fn=order_fn,
        first_order_fn=first_order_fn, first_steps=curriculum_steps,
    )  # fmt: skip
    options: dict[str, Any] = {}
    if num_workers > 0:
        options.update(multiprocessing_context="forkserver", prefetch_factor=4)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed * 1000 + rank),
        **options,
    )
