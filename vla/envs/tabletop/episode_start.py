"""How an episode of the tabletop suite starts: one seeded draw of the layout and the instruction.

Every backend starts its episodes here, so a seed gives the same initial state and the same
instruction whichever backend runs it: ``TabletopEnv.reset(seed=s)`` draws from
:func:`episode_rng` ``(s)`` (gymnasium's seeding, what ``gym.Env.reset`` installs), and the batched
Warp backend draws each world's start from the same generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from gymnasium.utils import seeding

from vla.envs.tabletop import scene
from vla.envs.tabletop.tasks import FAMILIES, TaskSpec

PHRASING_SETS = ("train", "heldout")


@dataclass(frozen=True)
class EpisodeStart:
    """The initial layout of an episode and the instruction it is given."""

    layout: scene.Layout
    instruction: str


def episode_rng(seed: int | None) -> np.random.Generator:
    """The generator ``TabletopEnv.reset(seed=seed)`` draws its episode from."""
    rng, _ = seeding.np_random(seed)
    return rng


def task_phrasings(task: TaskSpec, phrasing: str) -> tuple[str, ...]:
    """The instructions a ``phrasing`` set (``train`` or ``heldout``) of ``task`` samples from."""
    if phrasing not in PHRASING_SETS:
        raise ValueError(f"phrasing must be one of {PHRASING_SETS}, got {phrasing!r}")
    return task.train_phrasings if phrasing == "train" else task.heldout_phrasings


def sample_episode_start(
    task: TaskSpec, rng: np.random.Generator, phrasings: Sequence[str], layout: str = "free"
) -> EpisodeStart:
    """Draw the layout (accepted by the task's layout check) and then the instruction from ``rng``."""
    family = FAMILIES[task.family]
    sampled = scene.sample_layout(
        rng,
        family.drawer_opening,
        family.layout_check(task),
        min_y=family.min_y if family.min_y is not None else scene.OBJECT_Y[0],
        layout=layout,
    )
    instruction = phrasings[int(rng.integers(len(phrasings)))]
    return EpisodeStart(sampled, instruction)
