"""The tabletop suite: a 6-joint arm with a two-finger gripper and language-conditioned tasks.

Suite interface (called by ``vla.envs.registry``):

- ``task_names(selection) -> list[str]``: ``None``/``"all"`` for every task, a set name from
  ``TASK_SETS`` (``"demo"``, a family such as ``"reach"``), or a list of task names;
- ``make(task, **options) -> TabletopEnv``: options ``image_size``, ``cameras``, ``control``,
  ``phrasing``, ``max_steps``, ``render_mode``, ``terminate_on_success``, ``fast_render``,
  ``layout``, and ``backend`` (:data:`BACKENDS`: ``classic``, MuJoCo on the CPU with rasterized
  cameras, or ``warp``, MuJoCo Warp with ray-traced cameras on ``device``);
- ``make_batched(num_worlds, **options) -> BatchedTabletopEnv``: many worlds at once on a batched
  backend (:data:`BATCHED_BACKENDS`), what ``vla eval`` and ``vla record`` use for ``backend=warp``;
- ``make_expert(env, noise_std=0.0, seed=None) -> Callable[[dict], np.ndarray]``.

Metadata for reports: ``task_info(name)`` (phrasings, max steps, gym id) and ``TASKS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vla.envs.tabletop.env import CAMERAS, CONTROL_HZ, TabletopEnv
from vla.envs.tabletop.experts import make_expert
from vla.envs.tabletop.tasks import FAMILIES, TASKS, TaskSpec, task_spec

if TYPE_CHECKING:  # MuJoCo Warp loads only when a warp env is built
    from vla.envs.tabletop.batched import BatchedTabletopEnv

# Named selections usable as an env config's ``tasks`` entry.
TASK_SETS: dict[str, list[str]] = {
    "all": list(TASKS),
    "demo": ["reach-red", "reach-green", "reach-blue"],
    **{family: [n for n, t in TASKS.items() if t.family == family] for family in FAMILIES},
}

__all__ = [
    "CAMERAS",
    "CONTROL_HZ",
    "BACKENDS",
    "BATCHED_BACKENDS",
    "TASKS",
    "TASK_SETS",
    "TabletopEnv",
    "TaskSpec",
    "make",
    "make_batched",
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


def _classic(task: TaskSpec, device: str, options: dict[str, Any]) -> TabletopEnv:
    if device not in ("auto", "cpu"):
        raise ValueError(f"device={device!r} applies to backend=warp; backend=classic runs on the CPU")
    return TabletopEnv(task, **options)


def _warp(task: TaskSpec, device: str, options: dict[str, Any]) -> TabletopEnv:
    from vla.envs.tabletop.batched.single import WarpTabletopEnv

    return WarpTabletopEnv(task, device=device, **options)


# backend -> (task, device, options) -> one environment.
BACKENDS: dict[str, Callable[[TaskSpec, str, dict[str, Any]], TabletopEnv]] = {
    "classic": _classic,
    "warp": _warp,
}
# The backends that simulate many worlds in one process (vla eval and vla record batch them).
BATCHED_BACKENDS = ("warp",)


def make(task: str, backend: str = "classic", device: str = "auto", **options: Any) -> TabletopEnv:
    """One environment for ``task`` on ``backend`` (``device``: where a warp env runs; see
    ``TabletopEnv`` for the other options)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend](task_spec(task), device, options)


def make_batched(
    num_worlds: int, backend: str = "warp", device: str = "auto", **options: Any
) -> BatchedTabletopEnv:
    """``num_worlds`` worlds on a batched ``backend``, any task in any world (see
    :class:`~vla.envs.tabletop.batched.BatchedTabletopEnv`; options as :func:`make`'s)."""
    if backend not in BATCHED_BACKENDS:
        raise ValueError(
            f"backend={backend!r} runs one env per process; batched backends: {list(BATCHED_BACKENDS)}"
        )
    from vla.envs.tabletop.batched import BatchedTabletopEnv

    return BatchedTabletopEnv(num_worlds, device=device, **options)


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
