"""End to end on the simulated robot (tabletop MuJoCo suite): in-process vs through the server, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from deploy_fakes import FakeSpec

from vla.deploy.inference import ChunkPlanner
from vla.deploy.loop import LoopConfig, run_loop
from vla.deploy.safety import ActionFilter
from vla.deploy.server import serve_in_thread
from vla.deploy.sim_robot import SimRobot
from vla.envs.registry import make_env, make_expert
from vla.features import STATE_KEY, camera_key
from vla.policies.executor import ChunkExecutor
from vla_client.remote import RemoteInference
from vla_client.requester import ThreadedInference

ENV_CFG = {"suite": "tabletop", "image_size": 32, "cameras": ["front"]}
TASK = "reach-red"
SEEDS = [1_000_000, 1_000_001, 1_000_002]


@dataclass(frozen=True)
class ExpertSpec:
    camera_keys: tuple[str, ...] = (camera_key("front"),)
    image_shape: tuple[int, int, int] = (32, 32, 3)
    state_dim: int = 20
    action_dim: int = 4
    n_obs_steps: int = 1
    chunk_size: int = 8


class ExpertPolicy:
    """The tabletop scripted expert as a Policy: it reads the simulator it is bound to (test only)."""

    def __init__(self, env: Any) -> None:
        self.expert = make_expert(ENV_CFG, env)
        self.spec = ExpertSpec(state_dim=env.observation_space[STATE_KEY].shape[0])

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        action = np.asarray(self.expert(None), np.float32)
        return np.repeat(action[None, None], self.spec.chunk_size, axis=1).repeat(
            len(batch["instruction"]), 0
        )

    def predict_chunk(self, observation: dict[str, Any]) -> np.ndarray:
        return self.predict_chunks({"instruction": [observation["instruction"]]})[0]


def run_episodes(robot: SimRobot, requester: Any) -> list[bool]:
    planner = ChunkPlanner(requester, ChunkExecutor(replan_every=1), prefetch=1)
    successes = []
    for seed in SEEDS:
        robot.start_episode(seed)
        planner.reset()
        planner.warmup(robot.features.to_observation(robot.get_observation(), robot.instruction))
        summary = run_loop(
            robot,
            planner,
            robot.instruction,
            LoopConfig(hz=50, status_stream=None),
            ActionFilter(*robot.action_bounds),
            done=lambda: robot.episode_over,
        )
        assert summary["stopped_by"] == "done" and summary["num_inference_errors"] == 0
        successes.append(robot.success)
    return successes


def test_sim_robot_features_map_one_to_one() -> None:
    env = make_env(ENV_CFG, TASK)
    robot = SimRobot(env, seed=SEEDS[0])
    robot.connect()
    try:
        assert robot.observation_features["front"] == (32, 32, 3)
        assert list(robot.action_features) == env.unwrapped.action_names
        observation = robot.features.to_observation(robot.get_observation(), robot.instruction)
        raw = env.unwrapped._observation()
        assert np.array_equal(observation[camera_key("front")], raw[camera_key("front")])
        assert (
            np.allclose(observation[STATE_KEY], raw[STATE_KEY])
            and observation["instruction"] == raw["instruction"]
        )
        hold = robot.hold_action()
        assert hold["ee.dx"] == 0.0 and robot.send_action(hold) == hold and robot.steps == 1
    finally:
        robot.disconnect()


def test_episodes_succeed_through_the_server_as_in_process() -> None:
    robot = SimRobot(make_env(ENV_CFG, TASK), seed=SEEDS[0])
    robot.connect()
    policy = ExpertPolicy(robot.env)
    local = ThreadedInference(policy.predict_chunk)
    try:
        in_process = run_episodes(robot, local)
    finally:
        local.close()
    server = serve_in_thread(policy)
    remote = RemoteInference(server.url)
    try:
        through_server = run_episodes(robot, remote)
    finally:
        remote.close()
        server.stop()
        robot.disconnect()
    assert sum(in_process) >= 2, f"the expert must solve reach in-process: {in_process}"
    assert sum(through_server) == sum(in_process), f"in-process {in_process} vs server {through_server}"


class StillPolicy:
    """Never moves (a zero delta), so the episode runs until stopped."""

    def __init__(self) -> None:
        self.spec = FakeSpec(image_shape=(32, 32, 3), state_dim=20, action_dim=4)

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        return np.zeros((len(batch["instruction"]), self.spec.chunk_size, 4), np.float32)


def test_sigterm_stops_vla_deploy_holding_and_saves_stats(tmp_path) -> None:
    server = serve_in_thread(StillPolicy())
    stats = tmp_path / "stats.json"
    args = [sys.executable, "-m", "vla.cli", "deploy", "robot=sim", "env=tabletop", "env.image_size=32",
            "env.cameras=[front]", "env.max_steps=100000", f"task={TASK}", "hz=20", f"server={server.url}",
            f"stats={stats}", "seed=1000000"]  # fmt: skip
    process = subprocess.Popen(
        args, stderr=subprocess.PIPE, text=True, env={**os.environ, "MUJOCO_GL": "egl"}
    )
    try:
        deadline = time.monotonic() + 120
        assert process.stderr is not None
        for line in process.stderr:
            if "running at" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
    assert process.returncode == 143  # 128 + SIGTERM, as shells expect of a signalled run
    report = json.loads(stats.read_text())
    episode = report["episodes"][0]
    assert report["stopped_by"] == episode["stopped_by"] == "signal:SIGTERM"
    assert episode["steps"] >= 5 and episode["final_action"] == "hold"
    assert episode["final_command"] == {"ee.dx": 0.0, "ee.dy": 0.0, "ee.dz": 0.0, "gripper": 0.0}
    assert (
        0 < episode["achieved_hz"] <= 20.5 and "p99" in episode["period_jitter_ms"]
    )  # never faster than asked
    assert report["machine"]["cores"] >= 1


@pytest.mark.parametrize(
    ("bad", "message"), [("robot=moon", "robot='moon'"), ("hz=0", "hz=0.0: must be > 0")]
)
def test_deploy_cli_rejects_bad_arguments(bad, message, capsys) -> None:
    from vla.deploy.cli import main

    assert main(["env=tabletop", "server=ws://127.0.0.1:1", bad]) == 2
    assert message in capsys.readouterr().err
