"""Which (task, seed) jobs ``vla record`` hands out, and what a rerun already has of them.

Each task's seeds are tried in increasing order from its first training seed (its own block of
seeds, :func:`vla.seeds.first_train_seed`: the recipe's ``seed_start`` within it), tasks round-robin, and episodes are committed in hand-out order. So the jobs a run hands out depend only
on the outcome (committed or dropped) of the jobs before them, never on timing.

A rerun replays that same sequence from the start instead of starting a new one, and settles from
the store what the interrupted run already settled:

- a pair in the store was committed: it counts, at its place, and is not recorded again;
- a pair of a task that is not in the store but has a seed below that task's highest stored seed
  was handed out before an episode that was committed, so it was settled too, and, being absent,
  was dropped as failed: it is skipped, not tried again (unless ``keep_failed``, which keeps
  failures, is now on);
- any other pair is recorded.

The jobs that remain are then handed out, and committed, in the order the uninterrupted run would
have used: the same command gives the same store, episode for episode, interrupted or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from vla.seeds import TRAIN_SEED_RANGE, first_train_seed

STORED, FAILED = "stored", "failed"  # outcomes a rerun knows without recording


@dataclass
class TaskProgress:
    """One task's place in the hand-out sequence."""

    quota: int  # committed episodes wanted in the store
    committed: int  # committed so far (by this run, or replayed from the store)
    seeds: Iterator[int]  # training seeds not handed out yet, in order
    in_flight: int = 0
    attempts_left: int = 0

    def wants_more(self) -> bool:
        return self.committed + self.in_flight < self.quota and self.attempts_left > 0


def committed_pairs(store: Any) -> set[tuple[str, int]]:
    """The (task, seed) of every committed episode that records both."""
    pairs = set()
    for meta in store.episodes_meta():
        task = meta.extra.get("task")
        if task is not None and meta.seed is not None:
            pairs.add((str(task), int(meta.seed)))
    return pairs


def plan(
    quotas: dict[str, int], seed_start: int, stored: Iterable[tuple[str, int]], numbers: dict[str, int]
) -> dict[str, TaskProgress]:
    """Every task's progress at the start of the hand-out sequence (``numbers``: each task's number,
    :func:`vla.seeds.task_numbers`).

    Stored episodes with seeds below the first seed (from a run that started lower) are never
    handed out again; they count toward the quota from the start.
    """
    progress = {}
    for task, quota in quotas.items():
        first = first_train_seed(numbers[task], seed_start)
        below = sum(1 for t, seed in stored if t == task and seed < first)
        needed = max(quota - below, 0)
        progress[task] = TaskProgress(
            quota,
            min(below, quota),
            iter(range(first, TRAIN_SEED_RANGE.stop)),
            attempts_left=3 * needed + 5 * (needed > 0),
        )
    return progress


@dataclass(frozen=True)
class Resume:
    """What the store says about a pair the sequence hands out again (see the module docstring)."""

    stored: frozenset[tuple[str, int]]
    seed_start: int
    keep_failed: bool
    numbers: dict[str, int]  # each task's number (vla.seeds.task_numbers)
    _highest: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        highest: dict[str, int] = {}
        for task, seed in self.stored:
            highest[task] = max(seed, highest.get(task, seed))
        object.__setattr__(self, "_highest", highest)

    def outcome(self, task: str, seed: int) -> str | None:
        """:data:`STORED`, :data:`FAILED`, or None when the pair must be recorded."""
        if (task, seed) in self.stored:
            return STORED
        settled = first_train_seed(self.numbers[task], self.seed_start) <= seed < self._highest.get(task, -1)
        return FAILED if settled and not self.keep_failed else None

    def already(self, quotas: dict[str, int]) -> int:
        """Stored episodes of the selected tasks, up to each task's quota."""
        return sum(min(sum(1 for t, _ in self.stored if t == task), quota) for task, quota in quotas.items())


def settled(outcome: str) -> Future:
    """A finished job whose result is a known ``outcome`` (it goes through the same in-order commit)."""
    future: Future = Future()
    future.set_result(outcome)
    return future
