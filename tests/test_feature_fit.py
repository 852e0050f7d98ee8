"""A policy is checked against the environment before any episode runs: one error naming both sides."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from vla.evaluation.api import evaluate
from vla.policy_spec import FeatureMismatchError, PolicySpec, check_policy_features, replan_interval

FRONT, WRIST, STATE, ACTION = (
    "observation.images.front",
    "observation.images.wrist",
    "observation.state",
    "action",
)
TABLETOP = {"name": "tabletop_demo", "suite": "tabletop", "tasks": ["reach-red"], "image_size": 32,
            "cameras": ["front", "wrist"], "control": "joint_pos"}  # fmt: skip
EE_ACTIONS = ("ee.dx", "ee.dy", "ee.dz", "gripper")


class NeverCalled:
    """A policy trained on the end-effector control of the demo (4-D actions)."""

    def __init__(self, **spec: Any) -> None:
        fields = {"camera_keys": (FRONT, WRIST), "image_shape": (32, 32, 3), "state_dim": 20, "action_dim": 4,
                  "n_obs_steps": 1, "chunk_size": 4, "action_names": EE_ACTIONS} | spec  # fmt: skip
        self.spec = PolicySpec(**fields)

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        raise AssertionError("an episode ran with a policy that does not fit the env")


def test_eval_refuses_a_4d_policy_on_a_7d_env_before_any_episode() -> None:
    with pytest.raises(FeatureMismatchError) as info:
        evaluate(NeverCalled(), TABLETOP, episodes_per_task=2, num_envs=1, video_count=0, progress=False)
    message = str(info.value)
    assert "env tabletop_demo (reach-red)" in message
    assert "action: the policy produces shape (4,) [ee.dx, ee.dy, ee.dz, gripper]" in message
    assert "has shape (7,) [joint1.pos" in message


def test_eval_refuses_other_cameras_and_image_sizes_in_one_error() -> None:
    policy = NeverCalled(image_shape=(64, 64, 3), camera_keys=(FRONT, "observation.images.top"))
    with pytest.raises(FeatureMismatchError) as info:
        evaluate(policy, {**TABLETOP, "control": "ee_delta"}, episodes_per_task=1, num_envs=1, video_count=0,
                 progress=False)  # fmt: skip
    message = str(info.value)
    assert (
        "observation.images.front: the policy reads shape (64, 64, 3)" in message and "(32, 32, 3)" in message
    )
    assert "observation.images.top: the policy reads" in message and "has none" in message


def test_a_camera_the_policy_does_not_read_is_no_mismatch() -> None:
    """A two-camera checkpoint still runs in an env that renders a third (the Meta-World configs
    gained a side camera): the policy reads its own cameras and ignores the others."""
    spec = PolicySpec((FRONT, WRIST), (8, 8, 3), 2, 2, 1, 4)
    shapes = {
        FRONT: (8, 8, 3),
        WRIST: (8, 8, 3),
        "observation.images.side": (8, 8, 3),
        STATE: (2,),
        ACTION: (2,),
    }
    check_policy_features(spec, shapes)
    with pytest.raises(FeatureMismatchError, match="observation.images.wrist: the policy reads"):
        check_policy_features(spec, {k: v for k, v in shapes.items() if k != WRIST})


def test_action_names_are_compared_when_both_sides_have_them() -> None:
    spec = PolicySpec((FRONT,), (8, 8, 3), 2, 2, 1, 4, action_names=("x.vel", "y.vel"))
    shapes = {FRONT: (8, 8, 3), STATE: (2,), ACTION: (2,)}
    check_policy_features(spec, shapes, {ACTION: ("x.vel", "y.vel")})
    check_policy_features(spec, shapes, {})  # the source names nothing: shapes only
    with pytest.raises(
        FeatureMismatchError,
        match=r"action: the policy produces \[x.vel, y.vel\], the robot has \[y.vel, x.vel\]",
    ):
        check_policy_features(spec, shapes, {ACTION: ("y.vel", "x.vel")}, source="the robot")
    with pytest.raises(FeatureMismatchError, match="observation.state"):
        check_policy_features({"camera_keys": [FRONT], "image_shape": [8, 8, 3], "state_dim": 3}, shapes)


def test_replan_interval_reads_the_policys_own_then_its_chunk() -> None:
    spec = PolicySpec((FRONT,), (8, 8, 3), 2, 2, 1, 4)
    assert replan_interval(spec, fallback=8) == 4  # the whole chunk
    assert replan_interval(dataclasses.replace(spec, replan_every=2), fallback=8) == 2
    assert replan_interval({"chunk_size": 4, "replan_every": 9}, fallback=8) == 4  # never past the chunk
    assert replan_interval({"chunk_size": 4, "replan_every": 2}, fallback=8) == 2  # a server's spec dict
    assert replan_interval(None, fallback=8) == 8
