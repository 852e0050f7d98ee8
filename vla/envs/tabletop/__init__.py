"""The tabletop suite: a 6-joint arm with a two-finger gripper and language-conditioned tasks.

Suite interface (called by ``vla.envs.registry``):

- ``task_names(selection) -> list[str]``: ``None``/``"all"`` for every task, a set name from
  ``TASK_SETS`` (``"demo"``, a family such as ``"reach"``), or a list of task names;
- ``make(task, **options) -> TabletopEnv``: options ``image_size``, ``cameras``, ``control``,
  ``phrasing``, ``max_steps``, ``render_mode``, ``terminate_on_success``, ``fast_render``;
- ``make_expert(env, noise_std=0.0, seed=None) -> Callable[[dict], np.ndarray]``.

Metadata for reports: ``task_info(name)`` (phrasings, max steps, gym id) and ``TASKS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vla.envs.tabletop.env import CAMERAS, CONTROL_HZ, TabletopEnv
from vla.envs.tabletop.experts import make_expert
from vla.envs.tabletop.tasks import FAMILIES, TASKS, TaskSpec, task_spec

# Named selections usable as an env config's ``tasks`` entry.
TASK_SETS: dict[str, list[str]] = {
    "all": list(TASKS),
    "demo": ["reach-red", "reach-green", "reach-blue"],
    **{family: [n for n, t in TASKS.items() if t.family == family] for family in FAMILIES},
}

__all__ = [
    "CAMERAS",
    "CONTROL_HZ",
    "TASKS",
    "TASK_SETS",
    "TabletopEnv",
    "TaskSpec",
    "make",
    "make_expert",
    "task_info",
    "task_names",
]


def task_names(selection: str | Sequence[str] | None = None) -> list[str]:
    """The task names ``selection`` picks (``None`` or ``"all"``: every task), validated."""
    if selection is None:
        return list(TASKS)
    if isinstance(selection, str):
        if selection in TASK_SETS:
            return list(TASK_SETS[selection])
        selection = [selection]
    names = list(selection)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(
            f"unknown tabletop tasks {unknown}; known tasks: {list(TASKS)}; sets: {list(TASK_SETS)}"
        )
    return names


def make(task: str, **options: Any) -> TabletopEnv:
    """One environment for ``task`` (see ``TabletopEnv`` for the options)."""
    return TabletopEnv(task_spec(task), **options)


def task_info(name: str) -> dict[str, Any]:
    """Metadata of one task for reports: gym id, family, phrasings, time limit, control rate."""
    spec = task_spec(name)
    return {
        "name": spec.name,
        "gym_id": spec.gym_id,
        "family": spec.family,
        "train_phrasings": list(spec.train_phrasings),
        "heldout_phrasings": list(spec.heldout_phrasings),
        "max_steps": spec.max_steps,
        "control_hz": CONTROL_HZ,
    }
