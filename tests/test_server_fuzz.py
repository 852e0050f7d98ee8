"""The policy server under attack: malformed, mutated, oversized and stalled frames, many connections.

The server runs in a subprocess (loopback only) so its memory can be read from /proc; its policy is
the fake of ``deploy_fakes`` plus the real text tokenizer (what an instruction costs a real policy).
For a few seconds hostile clients flood it while a well-behaved client, connected first, keeps
asking for chunks. Asserted: the server's resident memory stays within a stated bound, the good
client is answered every time with bounded latency, and the server still answers afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import pytest
from deploy_fakes import fake_observation
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from vla_client.client import PolicyClient, ServerError
from vla_client.protocol import ProtocolError, pack, unpack

LIMIT = 1 << 20  # max_message_bytes of the server under test
MEMORY_BOUND_MIB = 64  # growth of the server's resident memory allowed while flooded
FLOOD_S = 3.0

SERVER = """
import inspect, sys, time
sys.path.insert(0, {tests!r})
from deploy_fakes import FakePolicy
from vla.deploy.server import PolicyServer, serve_in_thread
from vla.model.text_tokenizer import TextTokenizer

class TokenizingPolicy(FakePolicy):
    tokenizer = TextTokenizer.build(["go home", "pick up the red cube"])
    def predict_chunks(self, batch):
        self.tokenizer.encode(batch["instruction"], 32)  # what a real policy does with the text
        return super().predict_chunks(batch)

wanted = dict(max_message_bytes={limit}, max_connections=8, read_timeout_s=1.0)
accepted = inspect.signature(PolicyServer).parameters
handle = serve_in_thread(TokenizingPolicy(), **{{k: v for k, v in wanted.items() if k in accepted}})
print(handle.port, flush=True)
time.sleep(120)
"""


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture()
def server():
    code = SERVER.format(tests=os.path.dirname(__file__), limit=LIMIT)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield process, f"ws://127.0.0.1:{port}", port
    finally:
        process.kill()
        process.wait(timeout=30)


def _frame_header(length: int) -> bytes:
    """A masked binary client frame header announcing ``length`` bytes (mask key 0: payload as is)."""
    return b"\x82" + bytes([0x80 | 127]) + length.to_bytes(8, "big") + b"\0\0\0\0"


def _until(stop: threading.Event, action: Callable[[], None]) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError, ConnectionClosed, InvalidStatus, TimeoutError):
            action()


def _fuzz(url: str, rng: random.Random) -> None:
    """Random bytes and mutated valid messages; each gets an error reply or closes the connection."""
    valid = pack({"type": "infer", "id": 1, "observation": fake_observation()})
    with connect(url, open_timeout=5, max_size=None) as ws:
        for _ in range(50):
            kind = rng.random()
            if kind < 0.3:
                payload = rng.randbytes(rng.randrange(1, 4096))
            elif kind < 0.7:
                raw = bytearray(valid)
                for _ in range(rng.randrange(1, 8)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                payload = bytes(raw[: rng.randrange(1, len(raw) + 1)])
            elif kind < 0.85:  # decoding bombs: deep nesting, many tiny containers
                payload = (
                    b"\x91" * 50_000 + b"\xc0" if rng.random() < 0.5 else msgpack.packb([[{}] * 1000] * 200)
                )
            else:  # an instruction far longer than any real one, inside the message limit
                observation = {**fake_observation(), "instruction": "word " * (LIMIT // 6)}
                payload = pack({"type": "infer", "id": 2, "observation": observation})
            ws.send(payload)
            reply = unpack(ws.recv(timeout=10), LIMIT * 2)
            assert reply["type"] in ("error", "chunk"), reply


def _stall(port: int, size: int) -> None:
    """A handshake, then most of a ``size``-byte frame, then silence: held until the server drops it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        if b" 101 " not in sock.recv(4096):
            return  # refused (connection cap): nothing held
        sock.sendall(_frame_header(size) + bytes(size - 4096))
        sock.settimeout(FLOOD_S)
        with contextlib.suppress(TimeoutError):
            while sock.recv(4096):  # until the server closes it
                pass


def test_flooded_server_keeps_memory_bounded_and_answers_a_good_client(server) -> None:
    process, url, port = server
    good = PolicyClient(url, timeout_s=10.0)  # connected first, as the robot would be
    for _ in range(20):
        good.infer(fake_observation())
    baseline = _rss_mib(process.pid)
    stop = threading.Event()
    peak = [baseline]
    latencies: list[float] = []
    failures: list[str] = []

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                peak[0] = max(peak[0], _rss_mib(process.pid))
            time.sleep(0.02)

    def well_behaved() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = time.perf_counter()
            try:
                actions, _ = good.infer(fake_observation(state=(float(i), 0.0)))
                assert np.isclose(actions[0, 0], -0.1 * i)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)

    threads = [threading.Thread(target=sample), threading.Thread(target=well_behaved)]
    threads += [
        threading.Thread(target=_until, args=(stop, lambda s=s: _fuzz(url, random.Random(s))))
        for s in range(3)
    ]
    # Over the limit (what the old transport limit, 4x the message limit, let in), and within it.
    sizes = [4 * LIMIT - 1024, LIMIT // 2] * 12
    threads += [threading.Thread(target=_until, args=(stop, lambda n=n: _stall(port, n))) for n in sizes]
    for thread in threads:
        thread.start()
    time.sleep(FLOOD_S)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert not failures, failures[:3]
        assert len(latencies) > 20, "the good client was starved"
        assert float(np.median(latencies)) < 0.25 and max(latencies) < 3.0, (
            f"good client latency p50 {np.median(latencies) * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms"
        )
        grown = peak[0] - baseline
        print(f"good client: {len(latencies)} chunks, p50 {np.median(latencies) * 1e3:.1f} ms, "
              f"max {max(latencies) * 1e3:.0f} ms; server memory +{grown:.0f} MiB")  # fmt: skip
        assert grown < MEMORY_BOUND_MIB, f"server memory grew {grown:.0f} MiB under the flood"
    finally:
        good.close()
    with PolicyClient(url) as again:  # (the good client idled past the 1 s read timeout meanwhile)
        health = again.health()["server"]
    assert health["refused_connections"] > 0 and health["read_timeouts"] > 0
    assert process.poll() is None, "the server died"


def test_connections_beyond_the_cap_are_refused_and_the_rest_served(server) -> None:
    _, url, _ = server
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(url, open_timeout=5)) for _ in range(8)]
        with pytest.raises(InvalidStatus, match="503"):
            connect(url, open_timeout=5)
        held[0].send(pack({"type": "health"}))
        assert unpack(held[0].recv(timeout=10))["status"] == "ok"
    with PolicyClient(url) as client:  # slots are freed when connections close
        assert client.infer(fake_observation())[0].shape == (8, 2)


def test_oversized_and_long_instruction_requests_are_refused_before_any_work(server) -> None:
    _, url, _ = server
    with PolicyClient(url, max_message_bytes=LIMIT * 2) as client:
        with pytest.raises(ServerError, match="instruction.*characters"):
            client.infer({**fake_observation(), "instruction": "x" * 100_000})
        with pytest.raises(ServerError, match="'extra'.*not read by the policy"):
            client.infer({**fake_observation(), "extra": np.zeros(1000, np.float32)})
        assert client.infer(fake_observation())[0].shape == (8, 2)


def test_absurd_array_shapes_are_named_not_overflowed() -> None:
    array = {"__ndarray__": True, "dtype": "<f4", "shape": [2**62, 4], "bytes": b""}
    with pytest.raises(ProtocolError, match=r"needs 73786976294838206464 bytes, got 0"):
        unpack(msgpack.packb({"type": "x", "a": array}))
    with pytest.raises(ProtocolError, match="dimensions"):
        unpack(msgpack.packb({"type": "x", "a": {**array, "shape": [1] * 40}}))


def test_long_instruction_is_truncated_before_tokenizing() -> None:
    from vla.model.text_tokenizer import TextTokenizer

    tokenizer = TextTokenizer.build(["pick up the red cube", "go home"])
    long = "pick up the red cube " * 1_000_000 + "zzz"  # 21 MB
    started = time.perf_counter()
    tokens, _ = tokenizer.encode([long, "x" * 10_000_000], 32)
    assert time.perf_counter() - started < 1.0  # generous: the full texts take seconds
    head, _ = tokenizer.encode(["pick up the red cube " * 7, "x" * 40], 32)
    assert tokens.tolist() == head.tolist()
