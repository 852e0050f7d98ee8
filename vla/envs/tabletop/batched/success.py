"""The tabletop success tests for all worlds at once, as torch expressions on the device.

Each test restates its family's predicate in ``vla.envs.tabletop.tasks`` over (N, ...) tensors, with
the same constants (imported where ``tasks`` names them; the few inline thresholds there are
repeated here, and ``tests/test_warp_sim.py`` checks both versions agree world by world). A world's
test is chosen by its task's family code, so worlds of different tasks share one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vla.envs.tabletop.scene import BLOCK_HALF, BUTTON_TRAVEL, COLOURS
from vla.envs.tabletop.tasks import (
    DRAWER_CLOSED,
    DRAWER_OPEN,
    FAMILIES,
    LIFT_HEIGHT,
    PUSH_DISTANCE,
    REACH_RADIUS,
    TaskSpec,
)

FAMILY_CODES: dict[str, int] = {name: code for code, name in enumerate(FAMILIES)}
RELEASED_OPENING = 0.065  # tasks._released: wider than a block, nothing is held


@dataclass(frozen=True)
class WorldState:
    """What the tests read, for N worlds (colour axes in ``scene.COLOURS`` order)."""

    ee: torch.Tensor  # (N, 3) end-effector site
    blocks: torch.Tensor  # (N, 3, 3) block centres
    initial_blocks: torch.Tensor  # (N, 3, 3) block centres at reset
    button_depth: torch.Tensor  # (N, 3) how far each button is pressed
    plate: torch.Tensor  # (N, 3)
    drawer: torch.Tensor  # (N,) drawer opening
    gripper: torch.Tensor  # (N,) finger opening (sum of both fingers)


@dataclass(frozen=True)
class TaskCodes:
    """Each world's task as integers: its family and its colour arguments (0 where unused)."""

    family: torch.Tensor  # (N,) index into FAMILY_CODES
    colour: torch.Tensor  # (N,)
    second: torch.Tensor  # (N,)

    @classmethod
    def of(cls, tasks: Sequence[TaskSpec], device: torch.device) -> TaskCodes:
        def codes(values: list[int]) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.long, device=device)

        return cls(
            codes([FAMILY_CODES[t.family] for t in tasks]),
            codes([COLOURS.index(t.colour) if t.colour else 0 for t in tasks]),
            codes([COLOURS.index(t.second) if t.second else 0 for t in tasks]),
        )


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row ``index[i]`` of ``values[i]`` for every world i."""
    return values[torch.arange(len(index), device=index.device), index]


def _released(s: WorldState) -> torch.Tensor:
    return s.gripper > RELEASED_OPENING


def _reach(s: WorldState, t: TaskCodes) -> torch.Tensor:
    return torch.linalg.norm(s.ee - _pick(s.blocks, t.colour), dim=-1) < REACH_RADIUS


def _press(s: WorldState, t: TaskCodes) -> torch.Tensor:
    return _pick(s.button_depth, t.colour) > 0.65 * BUTTON_TRAVEL


def _push(s: WorldState, t: TaskCodes) -> torch.Tensor:
    pos, start = _pick(s.blocks, t.colour), _pick(s.initial_blocks, t.colour)
    return (pos[:, 1] - start[:, 1] > PUSH_DISTANCE) & (pos[:, 2] < 2 * BLOCK_HALF)


def _lifted(s: WorldState, t: TaskCodes) -> torch.Tensor:
    return _pick(s.blocks, t.colour)[:, 2] > BLOCK_HALF + LIFT_HEIGHT


def _place(s: WorldState, t: TaskCodes) -> torch.Tensor:
    pos = _pick(s.blocks, t.colour)
    on_plate = (torch.linalg.norm(pos[:, :2] - s.plate[:, :2], dim=-1) < 0.055) & (pos[:, 2] < 0.045)
    return on_plate & _released(s)


def _stack(s: WorldState, t: TaskCodes) -> torch.Tensor:
    top, base = _pick(s.blocks, t.colour), _pick(s.blocks, t.second)
    aligned = torch.linalg.norm(top[:, :2] - base[:, :2], dim=-1) < 0.03
    height = top[:, 2] - base[:, 2]
    resting = (height > 1.6 * BLOCK_HALF) & (height < 2.4 * BLOCK_HALF)
    return aligned & resting & (base[:, 2] < 1.5 * BLOCK_HALF) & _released(s)


def _drawer_open(s: WorldState, t: TaskCodes) -> torch.Tensor:
    return s.drawer > DRAWER_OPEN


def _drawer_closed(s: WorldState, t: TaskCodes) -> torch.Tensor:
    return s.drawer < DRAWER_CLOSED


BATCHED_SUCCESS: dict[str, Callable[[WorldState, TaskCodes], torch.Tensor]] = {
    "reach": _reach,
    "press": _press,
    "push": _push,
    "pick": _lifted,
    "place": _place,
    "stack": _stack,
    "open-drawer": _drawer_open,
    "close-drawer": _drawer_closed,
}
if set(BATCHED_SUCCESS) != set(FAMILIES):  # a family added to tasks.py needs its batched test here
    raise ImportError(f"batched success tests cover {sorted(BATCHED_SUCCESS)}, tasks has {sorted(FAMILIES)}")


def success(state: WorldState, tasks: TaskCodes) -> torch.Tensor:
    """(N,) bool: whether each world's task is achieved."""
    result = torch.zeros_like(tasks.family, dtype=torch.bool)
    for family, test in BATCHED_SUCCESS.items():
        result = torch.where(tasks.family == FAMILY_CODES[family], test(state, tasks), result)
    return result
