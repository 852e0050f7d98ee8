"""The lerobot adapter, driven through a real lerobot ``Robot`` subclass backed by our simulator."""

from __future__ import annotations

import numpy as np
from deploy_fakes import FakeSpec

from vla.deploy.inference import ChunkPlanner
from vla.deploy.lerobot_robot import LerobotRobotAdapter, SimLerobotRobot, SimLerobotRobotConfig
from vla.deploy.loop import LoopConfig, run_loop
from vla.deploy.robot import Robot
from vla.deploy.safety import ActionFilter
from vla.policies.executor import ChunkExecutor
from vla_client.requester import ThreadedInference

ENV = {"suite": "tabletop", "image_size": 32, "cameras": ["front"], "max_steps": 1000}


def test_lerobot_sim_robot_runs_in_the_loop(tmp_path) -> None:
    from lerobot.robots import Robot as LerobotRobot

    robot = SimLerobotRobot(
        SimLerobotRobotConfig(env=ENV, task="reach-red", seed=1_000_000, calibration_dir=tmp_path)
    )
    assert isinstance(robot, LerobotRobot) and robot.config_class is SimLerobotRobotConfig
    adapter = LerobotRobotAdapter(robot)
    assert isinstance(adapter, Robot)
    assert (
        adapter.observation_features["front"] == (32, 32, 3)
        and adapter.observation_features["joint1.pos"] is float
    )
    adapter.connect()
    chunks = []

    def predict(observation):  # move up (+z) with the gripper closed: a visible, checkable motion
        chunks.append(observation)
        return np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (FakeSpec().chunk_size, 1))

    requester = ThreadedInference(predict)
    planner = ChunkPlanner(requester, ChunkExecutor(replan_every=4), prefetch=2)
    z0 = adapter.get_observation()["ee.z"]
    planner.warmup(adapter.features.to_observation(adapter.get_observation(), adapter.instruction))
    summary = run_loop(
        adapter,
        planner,
        adapter.instruction,
        LoopConfig(hz=50, max_steps=20, status_stream=None),
        ActionFilter(*adapter.action_bounds),
    )
    requester.close()
    observation = adapter.get_observation()
    assert observation["ee.z"] > z0 + 0.01, "the sim arm must have moved up under the policy's commands"
    assert chunks[0]["observation.images.front"].shape == (32, 32, 3) and chunks[0]["instruction"]
    # Holding: zero end-effector delta, the gripper keeps its last command (closed).
    assert summary["final_command"] == {"ee.dx": 0.0, "ee.dy": 0.0, "ee.dz": 0.0, "gripper": 1.0}
    adapter.disconnect()
    assert not robot.is_connected
