"""``WarpTabletopEnv``: one task as a gym env whose physics and cameras run on MuJoCo Warp.

What ``tabletop.make(task, backend="warp")`` returns: a ``TabletopEnv`` (same options, spaces,
seeding, clipping, info) backed by world 0 of a one-world :class:`BatchedTabletopEnv`, so every
consumer of single envs (the deploy sim robot, env probes, an evaluation in worker processes) runs
the warp backend too. Batches of one are slow; ``vla eval`` and ``vla record`` build large batches
themselves. The batch is built at the first reset: declaring spaces (schema probes) costs nothing.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla.envs.tabletop.batched.env import BatchedTabletopEnv
from vla.envs.tabletop.batched.state import proprioception
from vla.envs.tabletop.batched.views import WorldView
from vla.envs.tabletop.env import TabletopEnv
from vla.envs.tabletop.episode_start import sample_episode_start
from vla.envs.tabletop.tasks import TaskSpec
from vla.features import camera_key


class WarpTabletopEnv(TabletopEnv):
    """``TabletopEnv`` on MuJoCo Warp (``device``: ``auto``, ``cpu`` or ``cuda``)."""

    def __init__(self, task: str | TaskSpec, device: str = "auto", **options: Any) -> None:
        super().__init__(task, **options)
        self.sim_device = device
        self._options = options
        self._batch: BatchedTabletopEnv | None = None

    @property
    def batch(self) -> BatchedTabletopEnv:
        if self._batch is None:
            self._batch = BatchedTabletopEnv(1, device=self.sim_device, **self._options)
        return self._batch

    @property
    def _view(self) -> WorldView:
        return self.batch.views[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        gym.Env.reset(self, seed=seed)  # seeds self.np_random exactly as TabletopEnv.reset does
        start = sample_episode_start(self.task, self.np_random, self.phrasings, self.layout)
        self.batch.start_worlds([0], [self.task], [start])
        self.instruction = start.instruction
        self._refresh()
        self._steps, self._clipped = 0, 0
        self.episode_id += 1
        return self._observation(), self._info(self._success())

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        action = self._checked_action(action)  # the classic checks and clip count
        result = self.batch.step(action[None])
        self._refresh()
        self._steps += 1
        success = bool(result.success[0])
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_steps and not terminated
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def _refresh(self) -> None:
        """Host copies of world 0 for the accessors (experts, tests) and ``data.qpos``."""
        snapshot = self.batch.snapshot()
        self._view.snapshot = snapshot
        self.data.qpos[:] = snapshot.qpos[0]

    def _success(self) -> bool:
        return bool(self.batch.success()[0])

    def _observation(self) -> dict[str, Any]:
        observation = {key: np.asarray(value[0].cpu()) for key, value in self.batch.observation().items()}
        observation["instruction"] = self.instruction
        return observation

    def _render_camera(self, camera: str) -> np.ndarray:
        if camera not in self.batch.cameras:
            raise ValueError(f"camera {camera!r} is not rendered by this env (cameras={list(self.cameras)})")
        return np.asarray(self.batch.observation()[camera_key(camera)][0].cpu())

    def close(self) -> None:
        self._batch = None

    # ----------------------------------------------------------------- privileged state, from world 0
    def ee_pos(self) -> np.ndarray:
        return self._view.ee_pos()

    def block_pos(self, colour: str) -> np.ndarray:
        return self._view.block_pos(colour)

    def initial_block_pos(self, colour: str) -> np.ndarray:
        return self._view.initial_block_pos(colour)

    def button_pos(self, colour: str) -> np.ndarray:
        return self._view.button_pos(colour)

    def button_depth(self, colour: str) -> float:
        return self._view.button_depth(colour)

    def plate_pos(self) -> np.ndarray:
        return self._view.plate_pos()

    def handle_pos(self) -> np.ndarray:
        return self._view.handle_pos()

    def drawer_opening(self) -> float:
        return self._view.drawer_opening()

    def gripper_opening(self) -> float:
        return self._view.gripper_opening()

    def _state(self) -> np.ndarray:
        return np.asarray(proprioception(self.batch.sim)[0].cpu())
