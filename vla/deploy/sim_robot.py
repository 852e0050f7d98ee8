"""A simulated robot: any env of our suites behind the :class:`~vla.deploy.robot.Robot` protocol.

The simulator advances one control step per ``send_action``, so the control loop sets the pace exactly
as it would with hardware. Features map 1:1 to the env's observation keys through ``vla.features``:
camera ``c`` is ``observation.images.c`` and the scalar features are the entries of
``observation.state`` (named by the env's ``state_names`` when it lists them, else ``state.<i>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from vla.deploy.robot import FeatureMap, default_hold_action
from vla.features import INSTRUCTION_KEY, STATE_KEY, camera_name, is_image_key


def _names(env: gym.Env, attribute: str, prefix: str, count: int) -> tuple[str, ...]:
    names = getattr(env.unwrapped, attribute, None)
    if names is not None and len(names) == count:
        return tuple(str(n) for n in names)
    return tuple(f"{prefix}.{i}" for i in range(count))


class SimRobot:
    """Drive ``env`` (built by ``vla.envs.registry.make_env``) as a robot; see the module docstring."""

    def __init__(self, env: gym.Env, seed: int | None = None, stop_on_success: bool = True) -> None:
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise TypeError(
                f"the env's observation space must be a Dict of vla features, got {type(space).__name__}"
            )
        self.env = env
        self.seed = seed
        self.stop_on_success = stop_on_success
        self._cameras = tuple(k for k in space.spaces if is_image_key(k))
        state_dim = int(space[STATE_KEY].shape[0]) if STATE_KEY in space.spaces else 0
        action_dim = int(np.prod(env.action_space.shape))
        self._state_names = _names(env, "state_names", "state", state_dim)
        self._action_names = _names(env, "action_names", "action", action_dim)
        self._observation_features: dict[str, Any] = {
            camera_name(k): tuple(space[k].shape) for k in self._cameras
        }
        self._observation_features |= {n: float for n in self._state_names}
        self._action_features: dict[str, Any] = {n: float for n in self._action_names}
        self.features = FeatureMap.from_features(self._observation_features, self._action_features)
        self._obs: dict[str, Any] | None = None
        self._last_command: dict[str, float] | None = None
        self.connected = False
        self.steps = 0
        self.success = False
        self.terminated = False
        self.truncated = False

    @classmethod
    def from_config(
        cls, env_cfg: Mapping[str, Any], task: str, seed: int | None = None, **overrides: Any
    ) -> SimRobot:
        """Build the env of ``task`` from an env config (``vla.envs.registry.make_env``)."""
        from vla.envs.registry import make_env

        return cls(make_env(env_cfg, task, **overrides), seed=seed)

    @property
    def observation_features(self) -> dict[str, Any]:
        return dict(self._observation_features)

    @property
    def action_features(self) -> dict[str, Any]:
        return dict(self._action_features)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The env's action space bounds (low, high), for the safety filter."""
        space = self.env.action_space
        return np.asarray(space.low, dtype=np.float32).reshape(-1), np.asarray(
            space.high, dtype=np.float32
        ).reshape(-1)

    @property
    def instruction(self) -> str:
        """The language instruction of the current episode."""
        return str(self._require_obs().get(INSTRUCTION_KEY, ""))

    @property
    def episode_over(self) -> bool:
        """Terminated, truncated, or (with ``stop_on_success``) succeeded."""
        return self.terminated or self.truncated or (self.stop_on_success and self.success)

    def connect(self) -> None:
        """Start the first episode."""
        self.connected = True
        self.start_episode()

    def start_episode(self, seed: int | None = None) -> None:
        """Reset the simulator (``seed`` overrides the one given at construction)."""
        self.seed = self.seed if seed is None else seed
        self._obs, _ = self.env.reset(seed=self.seed)
        self._last_command = None
        self.steps = 0
        self.success = self.terminated = self.truncated = False

    def get_observation(self) -> dict[str, Any]:
        """Flat features of the latest simulator observation."""
        obs = self._require_obs()
        flat: dict[str, Any] = {camera_name(k): obs[k] for k in self._cameras}
        if self._state_names:
            flat.update(
                zip(self._state_names, np.asarray(obs[STATE_KEY], dtype=np.float32).tolist(), strict=True)
            )
        return flat

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        """Step the simulator once with ``action``; returns the action applied."""
        self._require_obs()
        vector = self.features.action_from_dict(action)
        self._obs, _, terminated, truncated, info = self.env.step(vector)
        self.steps += 1
        self.success = self.success or bool(info.get("success", False))
        self.terminated = self.terminated or bool(terminated)
        self.truncated = self.truncated or bool(truncated)
        self._last_command = self.features.action_to_dict(vector)
        return dict(self._last_command)

    def hold_action(self) -> dict[str, float]:
        """The env's ``hold_action()`` when it defines one, else :func:`~vla.deploy.robot.default_hold_action`."""
        hold = getattr(self.env.unwrapped, "hold_action", None)
        if callable(hold):
            return self.features.action_to_dict(np.asarray(hold(), dtype=np.float32))
        return default_hold_action(self._action_names, self.get_observation(), self._last_command)

    def disconnect(self) -> None:
        """Close the simulator."""
        if self.connected:
            self.env.close()
        self.connected = False
        self._obs = None

    def _require_obs(self) -> dict[str, Any]:
        if self._obs is None:
            raise RuntimeError("the simulated robot is not connected: call connect() first")
        return self._obs
