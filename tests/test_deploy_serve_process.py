"""`vla serve` as a real process with a real (untrained) checkpoint; the policy-source registry."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_process, untrained_observation
from websockets.sync.client import connect

from vla.policies.sources import load_stored_policy, policy_kind
from vla_client.client import PolicyClient, ServerError
from vla_client.protocol import unpack

FRONT, STATE = "observation.images.front", "observation.state"


def test_serve_process_answers_and_stops_cleanly(untrained_checkpoint: Path) -> None:
    with serve_process(untrained_checkpoint) as server:
        url = server.url()
        with PolicyClient(url) as client:
            health = client.health()
            assert health["status"] == "ok" and health["spec"]["chunk_size"] == 4
            assert health["spec"]["camera_keys"] == [FRONT]
            actions, timing = client.infer(untrained_observation())
            assert actions.shape == (4, 3) and actions.dtype == np.float32 and np.isfinite(actions).all()
            assert timing["infer_ms"] > 0
            bad = {**untrained_observation(), STATE: np.zeros(5, np.float32)}
            with pytest.raises(ServerError, match=STATE):
                client.infer(bad)
        with connect(url) as ws:  # bytes that are not msgpack: an error reply, the server keeps going
            ws.send(b"\xc1not msgpack")
            reply = unpack(ws.recv(timeout=10))
            assert reply["type"] == "error" and "malformed msgpack" in reply["error"]
            ws.send(b"\x81\xa4type\xa6health")  # {"type": "health"} on the same connection
            assert unpack(ws.recv(timeout=10))["status"] == "ok"
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        server.wait_for(r"stopped after 1 chunks, 2 errors", 5.0)


def test_policy_sources_are_detected(untrained_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = untrained_checkpoint
    from vla.policies.export import export_policy

    assert policy_kind(checkpoint) == "checkpoint" and policy_kind(checkpoint.parents[1]) == "checkpoint"
    exported = export_policy(checkpoint, tmp_path / "exported", format="torchscript")
    assert policy_kind(exported) == "exported"
    lerobot = tmp_path / "pretrained_model"
    lerobot.mkdir()
    (lerobot / "config.json").write_text(json.dumps({"type": "act"}))
    (lerobot / "model.safetensors").write_bytes(b"")
    assert policy_kind(lerobot) == "lerobot"
    eager, from_export = load_stored_policy(checkpoint, "cpu"), load_stored_policy(exported, "cpu")
    assert eager.spec == from_export.spec
    observation = untrained_observation()
    np.testing.assert_allclose(from_export.predict_chunk(observation), eager.predict_chunk(observation))
    with pytest.raises(ValueError, match="exported policies run on the CPU"):
        load_stored_policy(exported, "cuda")
    with pytest.raises(
        ValueError, match="flow_steps=2 applies to vla checkpoints, not to the exported policy"
    ):
        load_stored_policy(exported, "cpu", flow_steps=2)
    if eager.model.config.action_head == "flow":
        assert load_stored_policy(checkpoint, "cpu", flow_steps=2).flow_steps == 2
    else:
        with pytest.raises(ValueError, match="flow_steps applies to flow-head checkpoints"):
            load_stored_policy(checkpoint, "cpu", flow_steps=2)
