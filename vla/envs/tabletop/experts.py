"""Scripted experts: privileged waypoint followers, one plan per task family.

An expert reads the simulator through ``env.unwrapped`` (object positions, drawer opening), walks a
list of waypoints (end-effector position + gripper command + how long to dwell) and outputs the
action of the env's control mode. ``noise_std`` adds Gaussian noise to the end-effector command for
diverse demonstrations; the noise stream is seeded, so a (seed, noise seed) pair replays exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from vla.envs.tabletop.env import EE_STEP, TabletopEnv
from vla.envs.tabletop.scene import BLOCK_HALF
from vla.envs.tabletop.tasks import TaskSpec

OPEN, CLOSE = -1.0, 1.0
GAIN = 1.0 / EE_STEP  # full-speed command when 1 step (2 cm) or more away
SAFE_Z = 0.16  # travel height above everything but the cabinet
STUCK_STEPS = 30  # a waypoint not reached in this many steps is given up (blocked by an object)


@dataclass
class Waypoint:
    """Go to ``pos`` with the gripper at ``grip``; done within ``tol`` metres, then ``dwell`` steps.

    ``tol=np.inf`` waits ``dwell`` steps wherever the gripper is (closing or opening in place).
    """

    pos: Callable[[], np.ndarray]  # re-read every step: targets follow objects that move
    grip: float
    tol: float = 0.012
    dwell: int = 0


Plan = Callable[[TabletopEnv, TaskSpec], list[Waypoint]]


def _above(
    p: Callable[[], np.ndarray], z: float, dx: float = 0.0, dy: float = 0.0
) -> Callable[[], np.ndarray]:
    return lambda: np.array([p()[0] + dx, p()[1] + dy, z])


def _at(
    p: Callable[[], np.ndarray], dz: float = 0.0, dx: float = 0.0, dy: float = 0.0
) -> Callable[[], np.ndarray]:
    return lambda: p() + np.array([dx, dy, dz])


def _fixed(p: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: p


def _reach(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    block = lambda: env.block_pos(task.colour)  # noqa: E731 - short closures read best inline
    return [
        Waypoint(_above(block, 0.1), CLOSE, tol=0.03),
        Waypoint(_at(block, dz=BLOCK_HALF + 0.012), CLOSE, dwell=5),
    ]


def _press(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    button = lambda: env.button_pos(task.colour)  # noqa: E731
    return [
        Waypoint(_above(button, 0.1), CLOSE, tol=0.03),
        Waypoint(_above(button, 0.08), CLOSE, tol=0.01),
        Waypoint(_above(button, 0.012), CLOSE, tol=0.005, dwell=10),
    ]


def _push(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    start = env.initial_block_pos(task.colour)
    behind = np.array([start[0], start[1] - 0.075, 0.0])
    block = lambda: env.block_pos(task.colour)  # noqa: E731
    # Closed loop: keep the fingers centred on the block's x and a little inside its right face, so
    # the push follows the block if it turns or drifts.
    pushing = lambda: np.array([block()[0], block()[1] - 0.02, 0.022])  # noqa: E731
    return [
        Waypoint(_fixed(behind + [0, 0, SAFE_Z - 0.04]), CLOSE, tol=0.02),
        Waypoint(_fixed(behind + [0, 0, 0.022]), CLOSE, tol=0.012),
        Waypoint(pushing, CLOSE, tol=0.0, dwell=0),
    ]


def _grasp(env: TabletopEnv, colour: str) -> list[Waypoint]:
    block = lambda: env.block_pos(colour)  # noqa: E731
    return [
        Waypoint(_above(block, 0.12), OPEN, tol=0.02),
        Waypoint(_above(block, 0.06), OPEN, tol=0.008),
        Waypoint(_at(block, dz=0.002), OPEN, tol=0.008),
        Waypoint(_at(block, dz=0.002), CLOSE, tol=np.inf, dwell=6),
    ]


def _pick(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    block = lambda: env.block_pos(task.colour)  # noqa: E731
    return [*_grasp(env, task.colour), Waypoint(_above(block, 0.2), CLOSE, tol=0.01, dwell=10)]


def _carry_to(env: TabletopEnv, where: Callable[[], np.ndarray], release_z: float) -> list[Waypoint]:
    return [
        Waypoint(_above(where, SAFE_Z), CLOSE, tol=0.02),
        Waypoint(_above(where, release_z + 0.03), CLOSE, tol=0.008),
        Waypoint(_above(where, release_z), CLOSE, tol=0.006),
        Waypoint(_above(where, release_z), OPEN, tol=np.inf, dwell=6),
        Waypoint(_above(where, SAFE_Z), OPEN, tol=0.02, dwell=20),
    ]


def _place(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    block = lambda: env.block_pos(task.colour)  # noqa: E731
    return [
        *_grasp(env, task.colour),
        Waypoint(_above(block, SAFE_Z), CLOSE, tol=0.03),
        *_carry_to(env, env.plate_pos, 0.008 + BLOCK_HALF + 0.008),
    ]


def _stack(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    block = lambda: env.block_pos(task.colour)  # noqa: E731
    base = lambda: env.block_pos(task.second)  # noqa: E731
    return [
        *_grasp(env, task.colour),
        Waypoint(_above(block, SAFE_Z), CLOSE, tol=0.03),
        *_carry_to(env, base, 3 * BLOCK_HALF + 0.008),
    ]


def _open_drawer(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    # Hook the closed fingers into the gap between the drawer front and the handle bar, then pull.
    handle = env.handle_pos
    return [
        Waypoint(_above(handle, 0.22, dy=-0.028), CLOSE, tol=0.02),
        Waypoint(_above(handle, 0.07, dy=-0.028), CLOSE, tol=0.008),
        Waypoint(_at(handle, dz=-0.03, dy=0.12 - 0.028), CLOSE, tol=0.01, dwell=5),
    ]


def _close_drawer(env: TabletopEnv, task: TaskSpec) -> list[Waypoint]:
    handle = env.handle_pos()  # fixed points: the handle moves away as we push
    return [
        Waypoint(_fixed(handle + np.array([0.0, 0.035, 0.1])), CLOSE, tol=0.02),
        Waypoint(_fixed(handle + np.array([0.0, 0.035, -0.005])), CLOSE, tol=0.01),
        Waypoint(_fixed(handle + np.array([0.0, -0.13, -0.005])), CLOSE, tol=0.01, dwell=10),
    ]


PLANS: dict[str, Plan] = {
    "reach": _reach,
    "press": _press,
    "push": _push,
    "pick": _pick,
    "place": _place,
    "stack": _stack,
    "open-drawer": _open_drawer,
    "close-drawer": _close_drawer,
}


@dataclass
class TabletopExpert:
    """Callable expert: ``expert(obs) -> action`` for the env it was built on."""

    env: TabletopEnv
    noise_std: float = 0.0
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _episode: int = field(default=-1, init=False, repr=False)
    _plan: list[Waypoint] = field(default_factory=list, init=False, repr=False)
    _index: int = field(default=0, init=False, repr=False)
    _dwell: int = field(default=0, init=False, repr=False)
    _age: int = field(default=0, init=False, repr=False)  # steps spent on the current waypoint

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, obs: dict[str, Any] | None = None) -> np.ndarray:
        env = self.env
        if env.episode_id != self._episode:  # a new episode: plan again from the fresh layout
            self._episode = env.episode_id
            self._plan = PLANS[env.task.family](env, env.task)
            self._index, self._dwell, self._age = 0, 0, 0
        point = self._plan[self._index]
        error = point.pos() - env.ee_pos()
        if self._index < len(self._plan) - 1:
            self._age += 1
            if np.linalg.norm(error) < point.tol:
                self._dwell += 1
            if self._dwell > point.dwell or self._age > STUCK_STEPS + point.dwell:
                self._index, self._dwell, self._age = self._index + 1, 0, 0
        delta = np.clip(GAIN * error, -1.0, 1.0)
        if self.noise_std > 0:
            delta = np.clip(delta + self._rng.normal(0.0, self.noise_std, 3), -1.0, 1.0)
        if env.control == "joint_pos":
            joints = env.ik.solve(env.data.qpos, env.ee_pos() + delta * EE_STEP, np.eye(3))
            return np.append(joints, point.grip).astype(np.float32)
        return np.append(delta, point.grip).astype(np.float32)


def make_expert(env: gym.Env, noise_std: float = 0.0, seed: int | None = None) -> TabletopExpert:
    """The scripted expert of a tabletop env (wrappers allowed: it reads ``env.unwrapped``)."""
    base = env.unwrapped
    if not isinstance(base, TabletopEnv):
        raise TypeError(f"make_expert needs a tabletop env, got {type(base).__name__}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    return TabletopExpert(base, noise_std=noise_std, seed=seed)
