"""The tabletop tasks: instructions (training and held-out phrasings), success tests, time limits.

A task is a family (reach, press, push, pick, place, stack, open-drawer, close-drawer) plus its
colour arguments. Every family with colours has one task per colour in the same scene, so only the
instruction tells which block or button counts: a policy that ignores language fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vla.envs.tabletop.scene import BLOCK_HALF, BUTTON_TRAVEL, COLOURS, LayoutCheck

if TYPE_CHECKING:
    from vla.envs.tabletop.env import TabletopEnv

PUSH_DISTANCE = 0.08  # "to the left": +y (the robot's left; the right side of the front image)
LIFT_HEIGHT = 0.1
REACH_RADIUS = 0.06
DRAWER_OPEN = 0.08  # metres out of 0.15
DRAWER_CLOSED = 0.02
DRAWER_START_OPEN = 0.12


@dataclass(frozen=True)
class Family:
    """What the tasks of one family share."""

    train: tuple[str, ...]  # templates with {c} (target colour) and {d} (second colour)
    heldout: tuple[str, ...]
    max_steps: int
    success: Callable[[TabletopEnv, TaskSpec], bool]
    layout_check: Callable[[TaskSpec], LayoutCheck | None] = lambda task: None
    drawer_opening: float = 0.0
    min_y: float | None = None  # a tighter bound on object y (keeps the open drawer's path clear)


@dataclass(frozen=True)
class TaskSpec:
    """One task of the suite (``name`` is what ``make`` and the gym id use)."""

    name: str
    family: str
    colour: str | None = None
    second: str | None = None
    train_phrasings: tuple[str, ...] = field(default=())
    heldout_phrasings: tuple[str, ...] = field(default=())
    max_steps: int = 100

    @property
    def gym_id(self) -> str:
        return f"vla/{self.name}-v0"


def _reach(env: TabletopEnv, task: TaskSpec) -> bool:
    return bool(np.linalg.norm(env.ee_pos() - env.block_pos(task.colour)) < REACH_RADIUS)


def _press(env: TabletopEnv, task: TaskSpec) -> bool:
    return env.button_depth(task.colour) > 0.65 * BUTTON_TRAVEL


def _push(env: TabletopEnv, task: TaskSpec) -> bool:
    pos, start = env.block_pos(task.colour), env.initial_block_pos(task.colour)
    return bool(pos[1] - start[1] > PUSH_DISTANCE and pos[2] < 2 * BLOCK_HALF)


def _pick(env: TabletopEnv, task: TaskSpec) -> bool:
    return bool(env.block_pos(task.colour)[2] > BLOCK_HALF + LIFT_HEIGHT)


def _released(env: TabletopEnv) -> bool:
    return env.gripper_opening() > 0.065  # wider than a block: nothing is held


def _place(env: TabletopEnv, task: TaskSpec) -> bool:
    pos = env.block_pos(task.colour)
    on_plate = np.linalg.norm(pos[:2] - env.plate_pos()[:2]) < 0.055 and pos[2] < 0.045
    return bool(on_plate and _released(env))


def _stack(env: TabletopEnv, task: TaskSpec) -> bool:
    top, base = env.block_pos(task.colour), env.block_pos(task.second)
    aligned = np.linalg.norm(top[:2] - base[:2]) < 0.03
    resting = 1.6 * BLOCK_HALF < top[2] - base[2] < 2.4 * BLOCK_HALF
    return bool(aligned and resting and base[2] < 1.5 * BLOCK_HALF and _released(env))


def _drawer_open(env: TabletopEnv, task: TaskSpec) -> bool:
    return env.drawer_opening() > DRAWER_OPEN


def _drawer_closed(env: TabletopEnv, task: TaskSpec) -> bool:
    return env.drawer_opening() < DRAWER_CLOSED


def _clear_push_corridor(task: TaskSpec) -> LayoutCheck:
    """The pushed block needs room on its right (where the fingers go down) and on its left."""

    def check(positions: dict[str, np.ndarray], cabinet_x: float) -> bool:
        x, y = positions[f"block_{task.colour}"]
        if np.hypot(x, y + 0.14) > 0.62:
            return False
        for name, p in positions.items():
            if name != f"block_{task.colour}" and abs(p[0] - x) < 0.09 and y - 0.11 < p[1] < y + 0.17:
                return False
        return True

    return check


FAMILIES: dict[str, Family] = {
    "reach": Family(
        train=(
            "touch the {c} block",
            "reach for the {c} block",
            "move the gripper to the {c} block",
            "go to the {c} cube",
        ),
        heldout=("put the gripper on the {c} cube", "tap the {c} block with the gripper"),
        max_steps=60,
        success=_reach,
    ),
    "press": Family(
        train=(
            "press the {c} button",
            "push down the {c} button",
            "hit the {c} button",
            "press down on the {c} button",
        ),
        heldout=("click the {c} button", "depress the {c} button"),
        max_steps=60,
        success=_press,
    ),
    "push": Family(
        train=(
            "push the {c} block to the left",
            "slide the {c} block left",
            "move the {c} block to the left by pushing it",
            "shove the {c} cube leftward",
        ),
        heldout=("nudge the {c} block toward the left", "push the {c} cube over to the left side"),
        max_steps=100,
        success=_push,
        layout_check=_clear_push_corridor,
        min_y=-0.12,  # the fingers go down right of the block: keep them off the drawer handle
    ),
    "pick": Family(
        train=(
            "pick up the {c} block",
            "lift the {c} block",
            "grasp the {c} block and lift it",
            "raise the {c} cube",
        ),
        heldout=("take the {c} cube off the table", "hold the {c} block up in the air"),
        max_steps=100,
        success=_pick,
    ),
    "place": Family(
        train=(
            "put the {c} block on the plate",
            "place the {c} block onto the plate",
            "move the {c} cube to the plate",
            "set the {c} block on the white plate",
        ),
        heldout=("transfer the {c} block onto the plate", "drop the {c} cube on the plate"),
        max_steps=150,
        success=_place,
    ),
    "stack": Family(
        train=(
            "stack the {c} block on the {d} block",
            "put the {c} block on top of the {d} block",
            "place the {c} cube onto the {d} cube",
            "pile the {c} block on the {d} block",
        ),
        heldout=(
            "set the {c} cube on top of the {d} cube",
            "build a tower with the {c} block above the {d} block",
        ),
        max_steps=150,
        success=_stack,
    ),
    "open-drawer": Family(
        train=("open the drawer", "pull the drawer open", "slide the drawer out", "open the cabinet drawer"),
        heldout=("pull out the drawer", "get the drawer open"),
        max_steps=120,
        success=_drawer_open,
        min_y=-0.15,
    ),
    "close-drawer": Family(
        train=(
            "close the drawer",
            "push the drawer shut",
            "slide the drawer closed",
            "shut the cabinet drawer",
        ),
        heldout=("push the drawer back in", "get the drawer closed"),
        max_steps=100,
        success=_drawer_closed,
        drawer_opening=DRAWER_START_OPEN,
        min_y=-0.04,
    ),
}

STACK_PAIRS: tuple[tuple[str, str], ...] = (("red", "blue"), ("green", "red"), ("blue", "green"))


def _spec(family: str, colour: str | None = None, second: str | None = None) -> TaskSpec:
    fam = FAMILIES[family]
    parts = [family, colour, "on", second] if second else [family, colour] if colour else [family]
    fill = {"c": colour or "", "d": second or ""}
    return TaskSpec(
        name="-".join(parts),
        family=family,
        colour=colour,
        second=second,
        train_phrasings=tuple(t.format(**fill) for t in fam.train),
        heldout_phrasings=tuple(t.format(**fill) for t in fam.heldout),
        max_steps=fam.max_steps,
    )


def _all_tasks() -> dict[str, TaskSpec]:
    specs = [_spec(f, c) for f in ("reach", "press", "push", "pick", "place") for c in COLOURS]
    specs += [_spec("stack", c, d) for c, d in STACK_PAIRS]
    specs += [_spec("open-drawer"), _spec("close-drawer")]
    return {s.name: s for s in specs}


TASKS: dict[str, TaskSpec] = _all_tasks()


def task_spec(name: str) -> TaskSpec:
    """The task called ``name``, or a KeyError listing the known tasks."""
    if name not in TASKS:
        raise KeyError(f"unknown tabletop task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]
