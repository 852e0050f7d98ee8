"""lerobot interop: drive any lerobot ``Robot`` from the control loop, and a lerobot robot backed by our simulator.

- :class:`LerobotRobotAdapter` wraps a ``lerobot.robots.Robot`` (so100, koch, ...) as a
  :class:`~vla.deploy.robot.Robot`: the flat feature dicts pass through unchanged (both sides use
  lerobot's shape) and the adapter adds what lerobot robots lack: a hold action (observed position for
  position-controlled joints, see :func:`~vla.deploy.robot.default_hold_action`) and action bounds.
- :class:`SimLerobotRobot` is a real lerobot ``Robot`` subclass (config type ``vla_sim``) whose motors
  and cameras are one of our simulated envs: the adapter, and any lerobot tool, can be exercised
  without hardware.

Importing this module imports lerobot (and torch with it); the rest of ``vla.deploy`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lerobot.robots import Robot as LerobotRobot
from lerobot.robots import RobotConfig

from vla.deploy.robot import FeatureMap, default_hold_action
from vla.deploy.sim_robot import SimRobot


class LerobotRobotAdapter:
    """A lerobot ``Robot`` behind vla's Robot protocol (see the module docstring)."""

    def __init__(self, robot: LerobotRobot, calibrate: bool = True,
                 action_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:  # fmt: skip
        self.robot = robot
        self.calibrate = calibrate
        self.features = FeatureMap.from_features(robot.observation_features, robot.action_features)
        self._bounds = action_bounds
        self._last_observation: dict[str, Any] = {}
        self._last_command: dict[str, float] | None = None

    @property
    def observation_features(self) -> dict[str, Any]:
        return dict(self.robot.observation_features)

    @property
    def action_features(self) -> dict[str, Any]:
        return dict(self.robot.action_features)

    @property
    def action_bounds(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Bounds given at construction, else the wrapped robot's ``action_bounds`` if it has them."""
        if self._bounds is not None:
            return self._bounds
        return getattr(self.robot, "action_bounds", (None, None))

    # Episode bookkeeping of simulated robots (absent on hardware: the getattr defaults apply).
    @property
    def instruction(self) -> str:
        return str(getattr(self.robot, "instruction", ""))

    @property
    def episode_over(self) -> bool:
        return bool(getattr(self.robot, "episode_over", False))

    @property
    def success(self) -> bool | None:
        return getattr(self.robot, "success", None)

    def start_episode(self, seed: int | None = None) -> None:
        """Reset a simulated robot; a no-op on hardware (the operator resets the scene)."""
        if hasattr(self.robot, "start_episode"):
            self.robot.start_episode(seed)

    def connect(self) -> None:
        """Connect (and calibrate when asked and needed) the lerobot robot."""
        if not self.robot.is_connected:
            self.robot.connect(calibrate=self.calibrate)

    def get_observation(self) -> dict[str, Any]:
        """The robot's flat observation (cameras as uint8 (H, W, 3) arrays)."""
        self._last_observation = dict(self.robot.get_observation())
        return self._last_observation

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        """Send ``action``; returns what the robot actually applied (lerobot robots may clip it)."""
        sent = dict(self.robot.send_action(action))
        self._last_command = {k: float(v) for k, v in sent.items()}
        return sent

    def hold_action(self) -> dict[str, float]:
        """Hold where the robot is: see :func:`~vla.deploy.robot.default_hold_action`."""
        observation = self._last_observation or self.get_observation()
        return default_hold_action(self.features.action_names, observation, self._last_command)

    def disconnect(self) -> None:
        """Disconnect the lerobot robot if connected."""
        if self.robot.is_connected:
            self.robot.disconnect()


@RobotConfig.register_subclass("vla_sim")
@dataclass(kw_only=True)
class SimLerobotRobotConfig(RobotConfig):
    """Config of :class:`SimLerobotRobot`: an env config (``vla.envs.registry``), a task and a seed."""

    env: dict[str, Any] = field(default_factory=lambda: {"suite": "tabletop"})
    task: str | None = None
    seed: int | None = None


class SimLerobotRobot(LerobotRobot):
    """A lerobot ``Robot`` whose hardware is a vla simulated env (one control step per ``send_action``)."""

    config_class = SimLerobotRobotConfig
    name = "vla_sim"

    def __init__(self, config: SimLerobotRobotConfig) -> None:
        super().__init__(config)
        from vla.envs.registry import task_names

        task = config.task or task_names(config.env)[0]
        self.sim = SimRobot.from_config(config.env, task, seed=config.seed)

    @property
    def observation_features(self) -> dict[str, Any]:
        return self.sim.observation_features

    @property
    def action_features(self) -> dict[str, Any]:
        return self.sim.action_features

    @property
    def is_connected(self) -> bool:
        return self.sim.connected

    @property
    def is_calibrated(self) -> bool:
        return True

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sim.action_bounds

    @property
    def instruction(self) -> str:
        return self.sim.instruction

    @property
    def episode_over(self) -> bool:
        return self.sim.episode_over

    @property
    def success(self) -> bool:
        return self.sim.success

    def connect(self, calibrate: bool = True) -> None:
        self.sim.connect()

    def calibrate(self) -> None:
        """Nothing to calibrate in simulation."""

    def configure(self) -> None:
        """Nothing to configure in simulation."""

    def start_episode(self, seed: int | None = None) -> None:
        self.sim.start_episode(seed)

    def get_observation(self) -> dict[str, Any]:
        if not self.is_connected:
            raise ConnectionError(f"{self} is not connected")
        return self.sim.get_observation()

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        if not self.is_connected:
            raise ConnectionError(f"{self} is not connected")
        return self.sim.send_action(action)

    def disconnect(self) -> None:
        self.sim.disconnect()
