"""Small fakes shared by the deploy tests: a policy implementing the Policy protocol and a robot."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.features import STATE_KEY, camera_key


@dataclass(frozen=True)
class FakeSpec:
    camera_keys: tuple[str, ...] = (camera_key("front"),)
    image_shape: tuple[int, int, int] = (8, 8, 3)
    state_dim: int = 2
    action_dim: int = 2
    n_obs_steps: int = 1
    chunk_size: int = 8
    replan_every: int | None = None  # None: the whole chunk


class FakePolicy:
    """Action chunk = -0.1 * state repeated (a proportional controller toward 0), optionally slow."""

    def __init__(self, spec: FakeSpec | None = None, delay_s: float = 0.0) -> None:
        self.spec = spec or FakeSpec()
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        state = np.asarray(batch[STATE_KEY], dtype=np.float32)[:, -1]  # (B, D)
        self.batch_sizes.append(state.shape[0])
        return np.repeat(-0.1 * state[:, None, :], self.spec.chunk_size, axis=1)

    def predict_chunk(self, observation: dict[str, Any]) -> np.ndarray:
        single = observation[STATE_KEY].ndim == 1
        batch = {
            k: (v[None, None] if single else v[None]) if isinstance(v, np.ndarray) else [v]
            for k, v in observation.items()
        }
        return self.predict_chunks(batch)[0]


def fake_observation(spec: FakeSpec | None = None, state: tuple[float, ...] = (1.0, -1.0)) -> dict[str, Any]:
    spec = spec or FakeSpec()
    return {
        spec.camera_keys[0]: np.zeros(spec.image_shape, np.uint8),
        STATE_KEY: np.asarray(state, np.float32),
        "instruction": "go home",
    }


class FakeRobot:
    """Two integrators: x += action each send_action; one 8x8 camera; hold is a zero velocity."""

    def __init__(self, observation_delay_s: float = 0.0) -> None:
        self.x = np.array([1.0, -1.0], np.float32)
        self.sent: list[dict[str, float]] = []
        self.observation_delay_s = observation_delay_s
        self.connected = False

    @property
    def observation_features(self) -> dict[str, Any]:
        return {"front": (8, 8, 3), "x.pos": float, "y.pos": float}

    @property
    def action_features(self) -> dict[str, Any]:
        return {"x.vel": float, "y.vel": float}

    def connect(self) -> None:
        self.connected = True

    def get_observation(self) -> dict[str, Any]:
        if self.observation_delay_s:
            time.sleep(self.observation_delay_s)
        return {"front": np.zeros((8, 8, 3), np.uint8), "x.pos": float(self.x[0]), "y.pos": float(self.x[1])}

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(dict(action))
        self.x = self.x + np.array([action["x.vel"], action["y.vel"]], np.float32)
        return action

    def hold_action(self) -> dict[str, float]:
        return {"x.vel": 0.0, "y.vel": 0.0}

    def disconnect(self) -> None:
        self.connected = False
