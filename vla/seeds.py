"""Seed ranges that keep training and evaluation apart, and give every task its own seeds.

Demonstrations are recorded with seeds from ``TRAIN_SEED_RANGE``; every evaluation draws its seeds
from ``EVAL_SEED_RANGE``. The ranges never overlap, so no evaluated layout was seen in training.

Both number a task by its place in its suite's full task list (:func:`task_numbers`), and task ``k``
gets its own block of seeds: ``k * TRAIN_SEEDS_PER_TASK + i`` for training, ``1_000_000 + 1000 * k
+ i`` for evaluation. Why a block per task: a seed fixes the scene's layout, so tasks recorded with
the same seeds would all be shown the same few hundred layouts (measured: a policy trained on 200
layouts shared by every task could not learn where things are; see the README's ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

TRAIN_SEED_RANGE = range(0, 1_000_000)
EVAL_SEED_RANGE = range(1_000_000, 2_000_000)
TRAIN_SEEDS_PER_TASK = 10_000  # 100 tasks fit in the training range


def task_numbers(tasks: Sequence[str], all_tasks: Sequence[str]) -> dict[str, int]:
    """Each task's number: its place in the suite's full list (``all_tasks``); tasks outside that
    list are numbered after it. So a task has the same seeds whether it is used alone or with others."""
    index = {task: i for i, task in enumerate(all_tasks)}
    extra = [t for t in tasks if t not in index]
    index.update({task: len(all_tasks) + i for i, task in enumerate(extra)})
    return {task: index[task] for task in tasks}


def first_train_seed(task_number: int, start: int = 0) -> int:
    """The first training seed of task number ``task_number`` for a recording starting at ``start``."""
    return TRAIN_SEED_RANGE.start + task_number * TRAIN_SEEDS_PER_TASK + start


def train_seeds(count: int, start: int = 0, task_number: int = 0) -> list[int]:
    """``count`` training seeds of task number ``task_number``, from ``start`` (inside the training range)."""
    first = first_train_seed(task_number, start)
    seeds = list(range(first, first + count))
    if seeds and seeds[-1] not in TRAIN_SEED_RANGE:
        raise ValueError(f"training seeds must stay below {TRAIN_SEED_RANGE.stop}")
    return seeds


def eval_seeds(count: int, task_index: int = 0) -> list[int]:
    """The published evaluation seeds: ``count`` seeds for task number ``task_index``.

    Task ``k`` uses ``1_000_000 + 1000 * k + i`` for ``i < count`` (count <= 1000), so adding
    episodes extends a list instead of reshuffling it, and every number is reproducible.
    """
    if not 0 < count <= 1000:
        raise ValueError("episodes per task must be between 1 and 1000")
    base = EVAL_SEED_RANGE.start + 1000 * task_index
    return list(range(base, base + count))


def check_training_seed(seed: int) -> None:
    """Refuse a seed reserved for evaluation."""
    if seed in EVAL_SEED_RANGE:
        raise ValueError(
            f"seed {seed} is reserved for evaluation ({EVAL_SEED_RANGE}); record with seeds below"
        )
