"""`vla deploy` when inference goes away: hold, say so, reconnect, always keep the statistics.

The policy server runs in a subprocess that is killed with SIGKILL (as a crashed or OOM-killed
server would be), on loopback; runs are a few seconds of 50 Hz control with the fake robot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from deploy_fakes import FakePolicy, FakeRobot, FakeSpec
from omegaconf import OmegaConf

from vla.deploy.safety import StopRequest
from vla.deploy.session import DeployRun, run_deploy, signal_exit_status
from vla.policy_spec import FeatureMismatchError
from vla_client.remote import Reconnect, RemoteInference
from vla_client.requester import InferenceLost, ThreadedInference

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from deploy_fakes import FakePolicy
from vla.deploy.server import serve_in_thread
handle = serve_in_thread(FakePolicy(), port={port})
print(handle.port, flush=True)
time.sleep(120)
"""


def _server(port: int = 0) -> tuple[subprocess.Popen, int]:
    code = SERVER.format(tests=os.path.dirname(__file__), port=port)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.isdigit(), f"the server did not start: {line!r}"
    return process, int(line)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _cfg(tmp_path: Path, **overrides: Any) -> Any:
    return OmegaConf.create({
        "robot": "fake", "episodes": 3, "seed": None, "replan_every": 4, "temporal_ensemble": None,
        "max_delta": None, "watchdog_observation_ms": 100.0, "watchdog_plan_ms": 300.0, "hz": 50.0,
        "max_steps": 60, "status": False, "prefetch": "auto", "stats": str(tmp_path / "stats.json"),
        "instruction": "go home", **overrides,
    })  # fmt: skip


def _run_in_thread(*args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["status"] = run_deploy(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_killed_server_is_announced_reconnected_and_the_run_finishes(tmp_path: Path) -> None:
    server, port = _server()
    messages: list[str] = []
    remote = RemoteInference(f"ws://127.0.0.1:{port}", timeout_s=5.0, notify=messages.append)
    robot = FakeRobot()
    cfg = _cfg(tmp_path)
    thread, outcome = _run_in_thread(cfg, [], robot, remote, remote.spec, StopRequest())
    replacement = None
    try:
        time.sleep(0.6)  # inside the first episode
        _kill(server)
        time.sleep(0.8)  # the loop holds meanwhile
        replacement, _ = _server(port)
        thread.join(timeout=90)
        assert not thread.is_alive()
    finally:
        remote.close()
        _kill(server)
        if replacement is not None:
            _kill(replacement)
    assert outcome.get("error") is None and outcome["status"] == 0
    assert any("lost the policy server" in m and "reconnecting" in m for m in messages), messages
    assert any(m.startswith("reconnected") for m in messages), messages
    report = json.loads(Path(cfg.stats).read_text())
    assert len(report["episodes"]) == 3 and report["exit_status"] == 0
    assert report["server"] == {"losses": 1, "reconnects": 1}
    assert sum(sum(e["holds"].values()) for e in report["episodes"]) > 0  # it held while the server was away
    assert robot.sent[-1] == robot.hold_action()


def test_server_that_stays_away_ends_the_run_holding_with_statistics(tmp_path: Path) -> None:
    server, port = _server()
    messages: list[str] = []
    remote = RemoteInference(
        f"ws://127.0.0.1:{port}", timeout_s=2.0, notify=messages.append,
        reconnect=Reconnect(first_delay_s=0.05, max_delay_s=0.2, give_up_after_s=1.5),
    )  # fmt: skip
    robot = FakeRobot()
    cfg = _cfg(tmp_path, episodes=100)
    thread, outcome = _run_in_thread(cfg, [], robot, remote, remote.spec, StopRequest())
    try:
        time.sleep(1.7)  # the first episode (1.2 s) is done, the second one runs
        _kill(server)
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        remote.close()
        _kill(server)
    assert isinstance(outcome.get("error"), InferenceLost), outcome
    assert "could not reconnect" in str(outcome["error"]) and f":{port}" in str(outcome["error"])
    report = json.loads(Path(cfg.stats).read_text())
    assert 1 <= len(report["episodes"]) < 100 and report["exit_status"] == 1
    assert report["error"].startswith("InferenceLost") and report["stopped_by"] == "error:InferenceLost"
    assert robot.sent[-1] == robot.hold_action()  # left holding
    assert any("lost the policy server" in m for m in messages)


def test_a_policy_for_other_features_is_refused_before_the_robot_moves(tmp_path: Path) -> None:
    policy = FakePolicy(FakeSpec(action_dim=4, state_dim=3))
    from vla_client.requester import ThreadedInference

    requester = ThreadedInference(policy.predict_chunk)
    robot = FakeRobot()  # 2 state values, 2 actions
    cfg = _cfg(tmp_path)
    try:
        with pytest.raises(FeatureMismatchError) as info:
            run_deploy(cfg, [], robot, requester, policy.spec, StopRequest())
    finally:
        requester.close()
    message = str(info.value)
    assert "action: the policy produces shape (4,)" in message and "has shape (2,) [x.vel, y.vel]" in message
    assert "observation.state" in message
    assert robot.sent == [] and not robot.connected
    report = json.loads(Path(cfg.stats).read_text())
    assert report["episodes"] == [] and report["error"].startswith("FeatureMismatchError")


def test_signals_give_the_exit_status_shells_expect() -> None:
    assert signal_exit_status("SIGINT") == 130 and signal_exit_status("SIGTERM") == 143
    assert DeployRun(stopped_by="signal:SIGTERM").exit_status == 143
    assert DeployRun(stopped_by="max_steps").exit_status == 0
    assert DeployRun(stopped_by="error:X", error=RuntimeError("x")).exit_status == 1


def test_stop_request_mid_run_exits_128_plus_signal(tmp_path: Path) -> None:
    policy = FakePolicy()
    from vla_client.requester import ThreadedInference

    requester = ThreadedInference(policy.predict_chunk)
    stop = StopRequest()
    timer = threading.Timer(0.5, stop.request, args=("SIGTERM",))
    timer.start()
    cfg = _cfg(tmp_path, episodes=50)
    try:
        assert run_deploy(cfg, [], FakeRobot(), requester, policy.spec, stop) == 143
    finally:
        timer.cancel()
        requester.close()
    report = json.loads(Path(cfg.stats).read_text())
    assert report["stopped_by"] == "signal:SIGTERM" and report["exit_status"] == 143


@pytest.mark.parametrize(
    ("spec_replan", "cfg_replan", "expected"), [(2, None, 2), (None, None, 8), (2, 4, 4)]
)
def test_deploy_replans_at_the_policys_own_interval_unless_told(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec_replan: int | None,
    cfg_replan: int | None,
    expected: int,
) -> None:
    from vla.deploy import session
    from vla.policies.executor import ChunkExecutor

    made: list[ChunkExecutor] = []
    monkeypatch.setattr(
        session, "ChunkExecutor", lambda *a, **k: made.append(ChunkExecutor(*a, **k)) or made[-1]
    )
    spec = FakeSpec(replan_every=spec_replan)  # chunk_size 8
    requester = ThreadedInference(FakePolicy(spec).predict_chunk)
    cfg = _cfg(tmp_path, episodes=1, max_steps=10, replan_every=cfg_replan)
    try:
        assert run_deploy(cfg, [], FakeRobot(), requester, spec, StopRequest()) == 0
    finally:
        requester.close()
    assert [executor.replan_every for executor in made] == [expected]
