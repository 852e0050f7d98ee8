"""`vla serve` as a real process with a real (untrained) checkpoint; the policy-source registry."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import connect

from vla.deploy.client import PolicyClient, ServerError
from vla.deploy.protocol import unpack
from vla.deploy.sources import load_deploy_policy, policy_kind

FRONT, STATE = "observation.images.front", "observation.state"
SMALL = [
    "policy.model.n_layer=1",
    "policy.model.n_embd=32",
    "policy.model.n_head=2",
    "policy.model.horizon=4",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vla.deploy.untrained import write_untrained_checkpoint

    root = tmp_path_factory.mktemp("serve")
    return write_untrained_checkpoint(
        root / "ckpt", cameras=("front",), image_size=16, state_dim=4, action_dim=3, overrides=SMALL
    )


def _observation() -> dict:
    rng = np.random.default_rng(0)
    return {
        FRONT: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        STATE: rng.normal(size=4).astype(np.float32),
        "instruction": "pick up the red cube",
    }


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def _wait_for(lines: queue.Queue, pattern: str, timeout: float, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{''.join(seen)}")


def test_serve_process_answers_and_stops_cleanly(checkpoint: Path) -> None:
    command = [sys.executable, "-m", "vla.cli", "serve", f"checkpoint={checkpoint}", "port=0", "device=cpu"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(server.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        url = _wait_for(lines, r"listening on (ws://\S+)", 60.0, seen).group(1)
        with PolicyClient(url) as client:
            health = client.health()
            assert health["status"] == "ok" and health["spec"]["chunk_size"] == 4
            assert health["spec"]["camera_keys"] == [FRONT]
            actions, timing = client.infer(_observation())
            assert actions.shape == (4, 3) and actions.dtype == np.float32 and np.isfinite(actions).all()
            assert timing["infer_ms"] > 0
            bad = {**_observation(), STATE: np.zeros(5, np.float32)}
            with pytest.raises(ServerError, match=STATE):
                client.infer(bad)
        with connect(url) as ws:  # bytes that are not msgpack: an error reply, the server keeps going
            ws.send(b"\xc1not msgpack")
            reply = unpack(ws.recv(timeout=10))
            assert reply["type"] == "error" and "malformed msgpack" in reply["error"]
            ws.send(b"\x81\xa4type\xa6health")  # {"type": "health"} on the same connection
            assert unpack(ws.recv(timeout=10))["status"] == "ok"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        _wait_for(lines, r"stopped after 1 chunks, 2 errors", 5.0, seen)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_policy_sources_are_detected(checkpoint: Path, tmp_path: Path) -> None:
    from vla.policies.export import export_policy

    assert policy_kind(checkpoint) == "checkpoint" and policy_kind(checkpoint.parents[1]) == "checkpoint"
    exported = export_policy(checkpoint, tmp_path / "exported", format="torchscript")
    assert policy_kind(exported) == "exported"
    lerobot = tmp_path / "pretrained_model"
    lerobot.mkdir()
    (lerobot / "config.json").write_text(json.dumps({"type": "act"}))
    (lerobot / "model.safetensors").write_bytes(b"")
    assert policy_kind(lerobot) == "lerobot"
    eager, from_export = load_deploy_policy(checkpoint, "cpu"), load_deploy_policy(exported, "cpu")
    assert eager.spec == from_export.spec
    np.testing.assert_allclose(from_export.predict_chunk(_observation()), eager.predict_chunk(_observation()))
    with pytest.raises(ValueError, match="exported policies run on the CPU"):
        load_deploy_policy(exported, "cuda")
