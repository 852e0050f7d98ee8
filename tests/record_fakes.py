"""A tiny, fast env suite for `vla record` tests (suite name ``recordfake``; see test_record_lifecycle).

Episodes take ``length`` steps of ``step_s`` seconds each; task ``flaky`` fails on seeds whose
number is 1 modulo 3, so dropped seeds show up in the hand-out order.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SUITE = "recordfake"


class StepEnv(gym.Env):
    metadata = {"render_fps": 10}

    def __init__(self, task: str, step_s: float = 0.0, length: int = 4, phrasing: str = "train") -> None:
        self.task, self.step_s, self.length = task, step_s, length
        self.observation_space = spaces.Dict({
            "observation.images.front": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "observation.state": spaces.Box(-np.inf, np.inf, (2,), np.float32),
        })  # fmt: skip
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.seed_, self.t = 0, 0

    def _obs(self) -> dict[str, Any]:
        return {
            "observation.images.front": np.full((8, 8, 3), self.t, np.uint8),
            "observation.state": np.array([self.seed_, self.t], np.float32),
            "instruction": f"do {self.task}",
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.seed_, self.t = int(seed or 0), 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        time.sleep(self.step_s)
        self.t += 1
        done = self.t >= self.length
        success = done and not (self.task == "flaky" and self.seed_ % 3 == 1)
        return self._obs(), 0.0, done, False, {"success": success}


def task_names(selection: Any) -> list[str]:
    return list(selection or ["steady", "flaky"])


def make(task: str, **options: Any) -> StepEnv:
    return StepEnv(task, **options)


def make_expert(env: StepEnv, noise_std: float = 0.0, seed: int | None = None):
    return lambda observation: np.zeros(2, np.float32)
