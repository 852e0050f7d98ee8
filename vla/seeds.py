"""Seed ranges that keep training and evaluation apart.

Demonstrations are recorded with seeds from ``TRAIN_SEED_RANGE``; every evaluation draws its seeds
from ``EVAL_SEED_RANGE``. The ranges never overlap, so no evaluated layout was seen in training.
"""

from __future__ import annotations

TRAIN_SEED_RANGE = range(0, 1_000_000)
EVAL_SEED_RANGE = range(1_000_000, 2_000_000)


def train_seeds(count: int, start: int = 0) -> list[int]:
    """``count`` training seeds beginning at ``start`` (inside the training range)."""
    seeds = list(range(TRAIN_SEED_RANGE.start + start, TRAIN_SEED_RANGE.start + start + count))
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
