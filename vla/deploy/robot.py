"""The ``Robot`` protocol the control loop drives, and the mapping between its flat feature dicts and vla's.

The protocol has lerobot's shape (``connect``, ``get_observation``, ``send_action``, ``disconnect``,
``observation_features``, ``action_features``), so a lerobot robot plugs in through a thin adapter.
Features are flat dicts: a scalar feature is declared as ``float`` (``"shoulder_pan.pos": float``), a
camera as its ``(H, W, 3)`` shape. One addition: ``hold_action()``, the action that keeps the robot where
it is, which the safety layer sends whenever the policy cannot be trusted (late, stopped).

vla's side uses the names of ``vla.features``: each camera ``c`` becomes ``observation.images.c`` and the
scalar features, in declared order, become the vector ``observation.state``; the action vector maps to
the action features in declared order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vla.features import ACTION_KEY, STATE_KEY, camera_key

FeatureDict = Mapping[str, Any]


@runtime_checkable
class Robot(Protocol):
    """A robot (or simulator) the control loop can drive; see the module docstring."""

    @property
    def observation_features(self) -> dict[str, Any]: ...

    @property
    def action_features(self) -> dict[str, Any]: ...

    def connect(self) -> None: ...

    def get_observation(self) -> dict[str, Any]: ...

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]: ...

    def hold_action(self) -> dict[str, float]: ...

    def disconnect(self) -> None: ...


def is_camera_feature(declared: Any) -> bool:
    """Whether a declared feature is a camera: a ``(H, W, 3)`` shape tuple."""
    return isinstance(declared, tuple) and len(declared) == 3 and declared[2] == 3


@dataclass(frozen=True)
class FeatureMap:
    """How one robot's flat features map to vla's observation dict and action vector."""

    cameras: tuple[str, ...]  # camera feature names, in declared order
    state_names: tuple[str, ...]  # scalar observation features, in declared order
    action_names: tuple[str, ...]  # scalar action features, in declared order

    @classmethod
    def from_features(cls, observation_features: FeatureDict, action_features: FeatureDict) -> FeatureMap:
        """Read a robot's declared features; anything but ``float`` scalars and cameras is an error."""
        cameras, states = [], []
        for name, declared in observation_features.items():
            if is_camera_feature(declared):
                cameras.append(name)
            elif declared is float:
                states.append(name)
            else:
                raise ValueError(
                    f"observation feature {name!r} is declared as {declared!r}; expected float or (H, W, 3)"
                )
        for name, declared in action_features.items():
            if declared is not float:
                raise ValueError(
                    f"action feature {name!r} is declared as {declared!r}; only float actions are supported"
                )
        if not action_features:
            raise ValueError("the robot declares no action features")
        return cls(tuple(cameras), tuple(states), tuple(action_features))

    def observation_keys(self) -> list[str]:
        """vla's observation keys this robot provides."""
        return [camera_key(c) for c in self.cameras] + ([STATE_KEY] if self.state_names else [])

    def to_observation(self, flat: Mapping[str, Any], instruction: str) -> dict[str, Any]:
        """A robot's flat observation -> vla's observation dict (images uint8 (H, W, 3), state float32 (D,))."""
        observation: dict[str, Any] = {}
        for cam in self.cameras:
            if cam not in flat:
                raise KeyError(f"the robot's observation lacks camera {cam!r}")
            observation[camera_key(cam)] = np.asarray(flat[cam], dtype=np.uint8)
        if self.state_names:
            missing = [n for n in self.state_names if n not in flat]
            if missing:
                raise KeyError(f"the robot's observation lacks state features {missing}")
            observation[STATE_KEY] = np.array([float(flat[n]) for n in self.state_names], dtype=np.float32)
        observation["instruction"] = instruction
        return observation

    def to_flat_observation(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """vla's observation dict -> flat features (the inverse of :meth:`to_observation`)."""
        flat: dict[str, Any] = {cam: observation[camera_key(cam)] for cam in self.cameras}
        if self.state_names:
            state = np.asarray(observation[STATE_KEY], dtype=np.float32)
            if state.shape != (len(self.state_names),):
                raise ValueError(
                    f"{STATE_KEY} has shape {state.shape}; the robot declares {len(self.state_names)} state features"
                )
            flat.update({n: float(v) for n, v in zip(self.state_names, state, strict=True)})
        return flat

    def action_to_dict(self, action: np.ndarray) -> dict[str, float]:
        """An action vector -> the robot's flat action dict."""
        action = np.asarray(action).reshape(-1)
        if action.shape[0] != len(self.action_names):
            raise ValueError(
                f"action has {action.shape[0]} values; the robot declares {len(self.action_names)}: {self.action_names}"
            )
        return {n: float(v) for n, v in zip(self.action_names, action, strict=True)}

    def action_from_dict(self, action: Mapping[str, Any]) -> np.ndarray:
        """A flat action dict -> the action vector, in declared order."""
        missing = [n for n in self.action_names if n not in action]
        if missing:
            raise KeyError(f"action lacks features {missing}")
        return np.array([float(action[n]) for n in self.action_names], dtype=np.float32)


def declared_features(robot: Robot) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[str, ...]]]:
    """``(shapes, names)`` of what ``robot`` observes and takes, under vla's feature names.

    Shapes are per frame (cameras (H, W, 3), ``observation.state`` (D,), ``action`` (A,)); names are
    the state's and the action's, in declared order. This is what a policy is checked against
    (:func:`vla.policy_spec.check_policy_features`) before the robot moves.
    """
    features = FeatureMap.from_features(robot.observation_features, robot.action_features)
    shapes = {camera_key(c): tuple(robot.observation_features[c]) for c in features.cameras}
    names: dict[str, tuple[str, ...]] = {ACTION_KEY: features.action_names}
    if features.state_names:
        shapes[STATE_KEY] = (len(features.state_names),)
        names[STATE_KEY] = features.state_names
    shapes[ACTION_KEY] = (len(features.action_names),)
    return shapes, names


def default_hold_action(
    action_names: tuple[str, ...] | list[str],
    observation: Mapping[str, Any],
    last_command: Mapping[str, float] | None,
) -> dict[str, float]:
    """The action that keeps a robot still when it declares no hold action of its own.

    A position command (an action named like an observed scalar, ``"shoulder_pan.pos"``) holds the
    observed position; a gripper keeps its last command (letting go of an object is not holding); any
    other action (a velocity or an end-effector delta) is zero.
    """
    hold = {}
    for name in action_names:
        if name in observation and not isinstance(observation[name], np.ndarray):
            hold[name] = float(observation[name])
        elif "gripper" in name and last_command is not None and name in last_command:
            hold[name] = float(last_command[name])
        else:
            hold[name] = 0.0
    return hold
