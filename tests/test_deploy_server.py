"""Wire format, the policy server and the torch-free client, over loopback with dynamic ports."""

from __future__ import annotations

import collections
import threading
import time

import msgpack
import numpy as np
import pytest
from deploy_fakes import FakePolicy, FakeSpec, fake_observation
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from vla.deploy.server import serve_in_thread
from vla.features import STATE_KEY
from vla_client.client import PolicyClient, ServerError
from vla_client.protocol import ProtocolError, pack, unpack
from vla_client.remote import RemoteInference


@pytest.fixture()
def server():
    policy = FakePolicy()
    handle = serve_in_thread(policy, max_message_bytes=64 * 1024)
    handle.policy = policy
    yield handle
    handle.stop()


def test_arrays_round_trip_and_bad_arrays_are_named() -> None:
    message = {
        "type": "x",
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.zeros((2, 2), np.uint8),
        "s": "t",
    }
    decoded = unpack(pack(message))
    assert decoded["a"].dtype == np.float32 and decoded["a"].shape == (2, 3) and decoded["a"].flags.writeable
    assert np.array_equal(decoded["a"], message["a"]) and decoded["s"] == "t"
    big_endian = unpack(pack({"type": "x", "a": np.arange(3, dtype=">i4")}))["a"]
    assert big_endian.tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="object"):
        pack({"type": "x", "a": np.array([object()])})
    forged = msgpack.packb(
        {"type": "x", "a": {"__ndarray__": True, "dtype": "|O", "shape": [1], "bytes": b"\0" * 8}}
    )
    with pytest.raises(ProtocolError, match="dtype '|O' is not allowed"):
        unpack(forged)
    short = msgpack.packb(
        {"type": "x", "a": {"__ndarray__": True, "dtype": "<f4", "shape": [4], "bytes": b"\0" * 8}}
    )
    with pytest.raises(ProtocolError, match="needs 16 bytes, got 8"):
        unpack(short)
    with pytest.raises(ProtocolError, match="malformed msgpack"):
        unpack(b"\xc1\xff\x00")
    with pytest.raises(ProtocolError, match="exceeds max_size"):
        unpack(pack({"type": "x", "a": np.zeros(100, np.uint8)}), max_bytes=50)


def test_health_and_inference(server) -> None:
    with PolicyClient(server.url) as client:
        health = client.health()
        assert health["status"] == "ok" and health["spec"]["chunk_size"] == 8
        assert health["spec"]["camera_keys"] == ["observation.images.front"]
        actions, timing = client.infer(fake_observation())
        assert actions.shape == (8, 2) and np.allclose(actions[0], [-0.1, 0.1])
        assert {"decode_ms", "queue_ms", "infer_ms", "encode_ms", "batch_size"} <= set(timing)
        history = fake_observation()
        history[STATE_KEY] = np.ones((1, 2), np.float32)
        history["observation.images.front"] = history["observation.images.front"][None]
        assert np.allclose(client.infer(history)[0][0], [-0.1, -0.1])


BAD_OBSERVATIONS = {
    "missing camera": (lambda o: o.pop("observation.images.front"), "observation.images.front"),
    "float image": (
        lambda o: o.update({"observation.images.front": np.zeros((8, 8, 3), np.float32)}),
        "uint8",
    ),
    "wrong image size": (
        lambda o: o.update({"observation.images.front": np.zeros((9, 8, 3), np.uint8)}),
        "observation.images.front",
    ),
    "short state": (lambda o: o.update({STATE_KEY: np.zeros(3, np.float32)}), STATE_KEY),
    "nan state": (lambda o: o.update({STATE_KEY: np.array([np.nan, 0], np.float32)}), "NaN"),
    "no instruction": (lambda o: o.pop("instruction"), "instruction"),
    "list state": (lambda o: o.update({STATE_KEY: [0.0, 1.0]}), "must be an array"),
}


@pytest.mark.parametrize("name", sorted(BAD_OBSERVATIONS))
def test_bad_observations_get_errors_naming_the_field(server, name) -> None:
    mutate, expected = BAD_OBSERVATIONS[name]
    observation = fake_observation()
    mutate(observation)
    with PolicyClient(server.url) as client:
        with pytest.raises(ServerError, match=expected.replace(".", r"\.")):
            client.infer(observation)
        assert client.infer(fake_observation())[0].shape == (8, 2), (
            "the connection must survive a bad request"
        )


def test_malformed_and_oversized_messages_get_error_replies(server) -> None:
    with connect(server.url) as ws:
        for payload, expected in [
            (b"\xc1garbage", "malformed msgpack"),
            ("text", "text frames"),
            (msgpack.packb([1, 2]), "must be a map"),
            (pack({"type": "fly"}), "unknown message type"),
            (pack({"type": "infer", "observation": fake_observation()}), "integer field 'id'"),
            (pack({"type": "infer", "id": 3}), "'observation'"),
        ]:
            ws.send(payload)
            reply = unpack(ws.recv(timeout=10))
            assert reply["type"] == "error" and expected in reply["error"], (expected, reply)
        ws.send(pack({"type": "health"}))
        assert unpack(ws.recv(timeout=10))["status"] == "ok"
    # A message over the limit is never read: its connection closes (1009, "message too big").
    with connect(server.url) as ws:
        ws.send(pack({"type": "infer", "id": 4, "observation": {"pad": np.zeros(100_000, np.uint8)}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with PolicyClient(server.url) as client:
        assert client.health()["status"] == "ok"


def test_bad_client_does_not_disturb_a_good_one(server) -> None:
    failures: list[str] = []
    stop = threading.Event()

    def bad_client() -> None:
        with connect(server.url) as ws:
            while not stop.is_set():
                ws.send(b"\x00\xc1 junk")
                ws.recv(timeout=10)
                observation = fake_observation()
                observation[STATE_KEY] = np.array([np.inf, 0], np.float32)
                ws.send(pack({"type": "infer", "id": 1, "observation": observation}))
                if unpack(ws.recv(timeout=10))["type"] != "error":
                    failures.append("a NaN observation was answered")

    thread = threading.Thread(target=bad_client)
    thread.start()
    try:
        with PolicyClient(server.url) as client:
            for i in range(30):
                actions, _ = client.infer(fake_observation(state=(float(i), 0.0)))
                assert np.isclose(actions[0, 0], -0.1 * i)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not failures


def test_concurrent_clients_are_batched() -> None:
    policy = FakePolicy(delay_s=0.05)
    handle = serve_in_thread(policy)
    try:
        results = []

        def run(i: int) -> None:
            with PolicyClient(handle.url) as client:
                results.append(client.infer(fake_observation(state=(float(i), 1.0)))[0][0, 0] + 0.1 * i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert len(results) == 6 and np.allclose(results, 0.0, atol=1e-6), "each client gets its own chunk"
        assert max(policy.batch_sizes) > 1
    finally:
        handle.stop()


def test_failing_policy_yields_error_and_server_survives() -> None:
    class Broken(FakePolicy):
        def predict_chunks(self, batch):
            if batch[STATE_KEY][0, -1, 0] < 0:
                raise RuntimeError("CUDA out of memory")
            return super().predict_chunks(batch)

    handle = serve_in_thread(Broken(FakeSpec()))
    try:
        with PolicyClient(handle.url) as client:
            with pytest.raises(ServerError, match="inference failed: RuntimeError: CUDA out of memory"):
                client.infer(fake_observation(state=(-1.0, 0.0)))
            assert client.infer(fake_observation())[0].shape == (8, 2)
    finally:
        handle.stop()


def test_remote_inference_runs_in_background(server) -> None:
    remote = RemoteInference(server.url)
    try:
        assert remote.spec["state_dim"] == 2
        assert remote.submit(fake_observation(), "tag")
        assert not remote.submit(fake_observation(), "second"), "one request in flight at a time"
        result = remote.poll(timeout=10)
        assert result.tag == "tag" and result.chunk.shape == (8, 2) and result.error is None
        assert (
            result.server_timing["infer_ms"] >= 0
            and result.latency_s * 1e3 >= result.server_timing["infer_ms"]
        )
    finally:
        remote.close()


def test_no_compression_and_nodelay(server) -> None:
    """permessage-deflate is never negotiated (binary numpy payloads), Nagle is off on the client."""
    import socket

    with connect(server.url) as ws:  # websockets' own client offers deflate by default: refused
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert ws.protocol.extensions == []
    with PolicyClient(server.url) as client:
        assert client._protocol.extensions == []
        assert client._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert client.infer(fake_observation())[0].shape == (8, 2)


def test_client_answers_keepalive_pings_while_idle(monkeypatch) -> None:
    import vla_client.client as client_module

    monkeypatch.setattr(client_module, "KEEPALIVE_POLL_S", 0.05)
    handle = serve_in_thread(FakePolicy(), ping_interval_s=0.1)
    try:
        with PolicyClient(handle.url) as client:
            time.sleep(1.0)  # ten pings, each to be answered within 0.1 s, while no request runs
            assert client.infer(fake_observation())[0].shape == (8, 2)
            assert client.health()["server"]["connections"] == 1, "the connection was never dropped"
    finally:
        handle.stop()


def test_client_times_out_and_fragmented_replies_are_joined() -> None:
    handle = serve_in_thread(FakePolicy(delay_s=0.5))
    try:
        with PolicyClient(handle.url, timeout_s=0.1) as client:
            with pytest.raises(TimeoutError, match="no reply within"):
                client.infer(fake_observation())
            client.timeout_s = 5.0  # the late reply of the timed-out request is skipped, not returned
            assert client.health()["status"] == "ok"
            actions, _ = client.infer(fake_observation(state=(2.0, 0.0)))
            assert np.isclose(actions[0, 0], -0.2)
    finally:
        handle.stop()
    client = PolicyClient.__new__(PolicyClient)
    client._fragments, client._pending = [], collections.deque()
    from websockets.frames import Frame, Opcode

    events = [Frame(Opcode.PING, b""), Frame(Opcode.BINARY, b"ab", fin=False), Frame(Opcode.CONT, b"c")]
    assert client._message(events) == b"abc"
    # Two replies in one read (a late reply and the awaited one arrive together): neither is lost.
    assert client._message([Frame(Opcode.BINARY, b"late"), Frame(Opcode.BINARY, b"now")]) == b"late"
    assert client._message([]) == b"now"
    assert client._message([]) is None


def test_fragmented_replies_are_joined() -> None:
    """A reply a server sends in several frames arrives as one message."""
    import asyncio

    from websockets.asyncio.server import serve

    reply = pack({"type": "chunk", "id": 0, "actions": np.arange(12, dtype=np.float32).reshape(6, 2)})

    async def fragmenting(ws) -> None:
        async for _ in ws:
            await ws.send([reply[:5], reply[5:9], reply[9:]])  # an iterable: one message, three frames

    async def main(started: threading.Event, stop: asyncio.Event, port: list[int]) -> None:
        async with serve(fragmenting, "127.0.0.1", 0, compression=None) as server:
            port.append(server.sockets[0].getsockname()[1])
            started.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    started, stop, port = threading.Event(), asyncio.Event(), []
    thread = threading.Thread(target=loop.run_until_complete, args=(main(started, stop, port),))
    thread.start()
    try:
        assert started.wait(10)
        with PolicyClient(f"ws://127.0.0.1:{port[0]}") as client:
            actions, _ = client.infer(fake_observation())
            assert actions.shape == (6, 2) and actions[5, 1] == 11.0
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def test_server_stop_ends_the_inference_thread() -> None:
    handle = serve_in_thread(FakePolicy())
    with PolicyClient(handle.url) as client:
        client.infer(fake_observation())
    handle.stop()
    deadline = time.monotonic() + 5
    while any(t.name == "vla-serve-infer" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not handle.thread.is_alive()
    assert not any(t.name == "vla-serve-infer" for t in threading.enumerate())


def test_error_replies_between_inferences_keep_the_ids_straight(server) -> None:
    """Interleaved garbage and requests on one connection: each reply answers its own request."""
    with connect(server.url) as ws:
        for i in range(20):
            ws.send(b"\xc1" if i % 2 else pack({"type": "infer", "id": i, "observation": fake_observation()}))
            reply = unpack(ws.recv(timeout=10))
            assert reply["type"] == ("error" if i % 2 else "chunk")
            assert reply["id"] == (None if i % 2 else i)


def test_split_round_trip_one_request_at_a_time(server) -> None:
    with PolicyClient(server.url) as client:
        request_id = client.send_infer(fake_observation(state=(3.0, 0.0)))
        with pytest.raises(RuntimeError, match="still waiting for its reply"):
            client.send_infer(fake_observation())
        actions, timing = client.receive_chunk(request_id)
        assert np.isclose(actions[0, 0], -0.3) and timing["infer_ms"] >= 0
        with pytest.raises(RuntimeError, match="no request is waiting"):
            client.receive_chunk(request_id)
        assert client.infer(fake_observation())[0].shape == (8, 2)


def test_remote_inference_sends_from_the_caller_and_reports_a_lost_server() -> None:
    handle = serve_in_thread(FakePolicy(delay_s=0.05))
    remote = RemoteInference(handle.url, timeout_s=5.0)
    try:
        sent = []
        original = remote.client.send_infer
        remote.client.send_infer = lambda o: sent.append(threading.current_thread()) or original(o)
        assert remote.submit(fake_observation(), "a")
        assert sent == [threading.current_thread()], "the request leaves from the submitting thread"
        assert not remote.submit(fake_observation(), "b"), "one request in flight at a time"
        result = remote.poll(timeout=10)
        assert result.tag == "a" and result.error is None and result.latency_s * 1e3 >= 50
        handle.stop()
        # The idle client answers the server's close, so the server does not wait out its close timeout.
        assert not handle.thread.is_alive(), "the server stopped while a client was connected"
        assert remote.submit(fake_observation(), "c"), "a send error is reported by poll, not raised"
        result = remote.poll(timeout=10)
        assert result.tag == "c" and result.chunk is None and result.error
    finally:
        remote.close()
        if handle.thread.is_alive():
            handle.stop()
