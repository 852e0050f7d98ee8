"""``vla serve checkpoint=<dir> port=<p> [host=127.0.0.1]``: a policy behind a WebSocket (msgpack).

``checkpoint`` may be a ``vla train`` checkpoint, a lerobot ``pretrained_model`` folder or a ``vla
export`` directory (:mod:`vla.policies.sources`); ``port=0`` picks a free port (printed when listening).

Each connection sends ``infer`` requests (an observation) and gets action chunks back, with the
server's own timing (decode, queue, infer, encode in ms); ``health`` returns the status and the
policy's spec. See :mod:`vla_client.protocol` for the messages.

Robustness: a malformed or wrongly typed message gets an ``error`` reply naming the problem and the
connection stays open; a failing forward pass fails only the requests in it. Inference runs in one
worker thread, fed straight from the event loop by a thread-safe queue, so the event loop keeps
serving other clients; requests waiting at the same time are batched into one ``predict_chunks``
call when their shapes match.

Limits, so that no client can exhaust the server's memory or starve the others:

- a frame or message larger than ``max_message_bytes`` closes its connection (1009) as it arrives:
  the server never buffers more of it; each connection holds at most one received message waiting
  (``max_queue=1``: a client that sends faster than it reads is paused by TCP);
- at most ``max_connections`` connections: the next handshake gets HTTP 503;
- a connection that delivers no complete message for ``read_timeout_s`` (a stalled, half-sent
  frame, or an idle peer) is closed (1008); :class:`~vla_client.remote.RemoteInference` reconnects;
- decoding is bounded (:mod:`vla_client.protocol`) and an observation's sizes are checked before any
  work on it (:mod:`vla.deploy.validation`), the instruction's length included.

So the memory a server holds for its clients is about ``3 * max_connections * max_message_bytes``
at most (a queued message, a partial frame and a decoded job per connection).

Arguments follow Hydra's override grammar (:mod:`vla.config`) and are checked against
:class:`ServeCommand` (``host``, ``device``, ``precision``, ``flow_steps``, ``max_size`` in bytes, ``max_batch``): an
unknown key or a wrong type is refused in one line (exit status 2); so are a missing checkpoint and
a port already in use (exit status 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from vla import __version__
from vla.cli_errors import cli_main
from vla.config_schema import above, at_least, required
from vla.deploy.validation import batch_signature, spec_to_dict, stack_batch, validate_observation
from vla.policy_spec import ObservationError
from vla_client.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ProtocolError,
    encode_array,
    error_message,
    pack,
    unpack,
)

DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_READ_TIMEOUT_S = 60.0


@dataclass
class _Job:
    observation: dict[str, Any]
    single_frame: bool
    received: float
    future: asyncio.Future[tuple[np.ndarray, dict[str, float]]] = field(repr=False)


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Runs on the event loop: hand a finished job's outcome to the request awaiting it."""
    if future.done():  # the connection went away while the job ran
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class PolicyServer:
    """Serve ``policy`` (anything with ``spec`` and ``predict_chunks``) to WebSocket clients."""

    def __init__(
        self,
        policy: Any,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch: int = 8,
        ping_interval_s: float | None = 20.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self.policy = policy
        self.ping_interval_s = ping_interval_s  # keepalive: a peer silent this long after a ping is dropped
        self.spec = policy.spec
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self._admitted = 0  # connections past process_request and not yet closed
        self.counts: defaultdict[str, int] = defaultdict(int)
        # Requests go straight from the event loop to one inference thread (a blocking queue, no
        # intermediate asyncio task or executor): one thread wake-up each way per request.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    async def run(
        self,
        host: str,
        port: int,
        ready: asyncio.Future[int] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Serve until ``stop`` is set; ``ready`` receives the bound port (useful with port 0)."""
        self._worker = threading.Thread(target=self._infer_forever, name="vla-serve-infer", daemon=True)
        self._worker.start()
        try:
            # compression=None: permessage-deflate off (numpy payloads barely compress and deflate
            # costs CPU on both sides); TCP_NODELAY is set on accepted sockets by asyncio itself.
            async with serve(
                self._handle,
                host,
                port,
                max_size=self.max_message_bytes,  # frames and messages alike: nothing larger is read
                max_queue=1,
                process_request=self._admit,
                compression=None,
                ping_interval=self.ping_interval_s,
                ping_timeout=self.ping_interval_s,
            ) as server:
                bound = next(iter(server.sockets)).getsockname()[1]
                if ready is not None:
                    ready.set_result(bound)
                await (stop or asyncio.Event()).wait()
        finally:
            self._jobs.put(None)  # stops the inference thread once the job in progress is done

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """During the handshake: refuse a connection beyond ``max_connections`` (HTTP 503)."""
        if self._admitted >= self.max_connections:
            self.counts["refused_connections"] += 1
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"this server takes at most {self.max_connections} connections\n",
            )
        self._admitted += 1
        asyncio.get_running_loop().create_task(self._release_when_closed(connection))
        return None

    async def _release_when_closed(self, connection: ServerConnection) -> None:
        try:
            await connection.wait_closed()
        finally:
            self._admitted -= 1

    async def _handle(self, websocket: ServerConnection) -> None:
        self.counts["connections"] += 1
        with contextlib.suppress(ConnectionClosed):
            while True:
                try:
                    data = await asyncio.wait_for(websocket.recv(), self.read_timeout_s)
                except TimeoutError:  # stalled mid-frame, or idle: free what it holds
                    self.counts["read_timeouts"] += 1
                    await websocket.close(1008, f"no complete message in {self.read_timeout_s:g} s")
                    return
                await websocket.send(await self._reply(data))

    async def _reply(self, data: bytes | str) -> bytes:
        """The encoded reply to one message; never raises for bad input."""
        received = time.perf_counter()
        request_id = None
        try:
            message = unpack(data, self.max_message_bytes)
            request_id = message.get("id")
            if message["type"] == "health":
                return pack(self._health())
            if message["type"] != "infer":
                raise ProtocolError(f"unknown message type {message['type']!r}; expected 'infer' or 'health'")
            if not isinstance(request_id, int):
                raise ProtocolError("an 'infer' message needs an integer field 'id'")
            if "observation" not in message:
                raise ProtocolError("an 'infer' message needs the field 'observation'")
            observation, single_frame = validate_observation(message["observation"], self.spec)
        except (ProtocolError, ObservationError) as exc:
            self.counts["errors"] += 1
            return error_message(str(exc), request_id)
        decoded = time.perf_counter()
        future: asyncio.Future[tuple[np.ndarray, dict[str, float]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._jobs.put(_Job(observation, single_frame, decoded, future))
        try:
            actions, timing = await future
        except Exception as exc:  # the forward pass failed: report it, keep serving
            self.counts["errors"] += 1
            return error_message(f"inference failed: {type(exc).__name__}: {exc}", request_id)
        self.counts["chunks"] += 1
        timing["decode_ms"] = (decoded - received) * 1e3
        started = time.perf_counter()
        encoded = encode_array(actions)  # the bulk of the reply; packed once, not twice to time it
        timing["encode_ms"] = (time.perf_counter() - started) * 1e3
        return pack({"type": "chunk", "id": request_id, "actions": encoded, "timing": timing})

    def _health(self) -> dict[str, Any]:
        return {
            "type": "health",
            "status": "ok",
            "spec": spec_to_dict(self.spec),
            "server": {
                "version": __version__,
                "max_message_bytes": self.max_message_bytes,
                "max_connections": self.max_connections,
                "read_timeout_s": self.read_timeout_s,
                **self.counts,
            },
        }

    def _infer_forever(self) -> None:
        """The inference thread: take every waiting request, group by shape, one forward per group.

        Requests that arrive while a forward runs wait in the queue and are batched into the next one.
        ``infer_ms`` is the time of the forward itself (stacking, ``predict_chunks``, output checks),
        measured in this thread: hand-offs between the event loop and this thread are not in it.
        """
        while True:
            first = self._jobs.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                jobs.append(job)
            groups: defaultdict[tuple[Any, ...], list[_Job]] = defaultdict(list)
            for job in jobs:
                groups[(job.single_frame, batch_signature(job.observation))].append(job)
            for group in groups.values():
                started = time.perf_counter()
                try:
                    chunks = self._predict(group)
                except BaseException as exc:  # fails this group only; the thread keeps serving
                    if not isinstance(exc, Exception):
                        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
                    for job in group:
                        self._settle(job, None, exc)
                    continue
                infer_ms = (time.perf_counter() - started) * 1e3
                for job, chunk in zip(group, chunks, strict=True):
                    timing = {
                        "queue_ms": (started - job.received) * 1e3,
                        "infer_ms": infer_ms,
                        "batch_size": len(group),
                    }
                    self._settle(job, (chunk, timing), None)

    @staticmethod
    def _settle(job: _Job, result: Any, exc: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (server stopping)
            # The future belongs to the event loop of the request awaiting it.
            job.future.get_loop().call_soon_threadsafe(_resolve, job.future, result, exc)

    def _predict(self, group: list[_Job]) -> np.ndarray:
        batch = stack_batch([job.observation for job in group], group[0].single_frame)
        chunks = np.asarray(self.policy.predict_chunks(batch), dtype=np.float32)
        if chunks.ndim != 3 or chunks.shape[0] != len(group):
            raise ValueError(f"the policy returned shape {chunks.shape}; expected ({len(group)}, H, A)")
        if not np.isfinite(chunks).all():
            raise ValueError("the policy returned NaN or infinite actions")
        return chunks


@dataclass
class ServerThread:
    """A server running in a background thread (tests, benchmarks); ``stop()`` shuts it down."""

    port: int
    thread: threading.Thread
    _loop: asyncio.AbstractEventLoop
    _stop: asyncio.Event

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Ask the server to stop and wait for it (up to 10 s); calling it again does no harm."""
        with contextlib.suppress(RuntimeError):  # the loop already closed: the server has stopped
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=10.0)


def serve_in_thread(policy: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> ServerThread:
    """Start a :class:`PolicyServer` on ``host:port`` (0: a free port) in a daemon thread."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()
    server = PolicyServer(policy, **options)

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(server.run(host, port, ready, stop))
        loop.close()

    thread = threading.Thread(target=run, name="vla-policy-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30.0
    while not ready.done():
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the policy server did not start on {host}:{port}")
        time.sleep(0.01)
    return ServerThread(ready.result(), thread, loop, stop)


@dataclass
class ServeCommand:
    """``vla serve``'s keys."""

    checkpoint: str = required("<dir>")
    port: int = at_least(8765, 0)  # 0: a free port
    host: str = "127.0.0.1"
    device: str = "auto"
    precision: str = "auto"
    flow_steps: int | None = at_least(None, 1)  # flow head: Euler steps per chunk (None: the checkpoint's)
    max_size: int = above(DEFAULT_MAX_MESSAGE_BYTES, 0)  # largest message accepted, in bytes
    max_batch: int = at_least(8, 1)


@cli_main("serve")
def main(argv: Sequence[str]) -> int:
    """Load a policy (any kind of :mod:`vla.policies.sources`) and serve it until Ctrl-C or SIGTERM."""
    from vla.config import compose_command  # Hydra loads for the command line only, not for servers in tests
    from vla.policies.sources import load_stored_policy

    cfg = compose_command("serve", argv, ServeCommand)

    policy = load_stored_policy(
        cfg.checkpoint, device=cfg.device, precision=cfg.precision, flow_steps=cfg.flow_steps
    )
    server = PolicyServer(policy, max_message_bytes=cfg.max_size, max_batch=cfg.max_batch)
    host, port = cfg.host, cfg.port

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop, ready = asyncio.Event(), loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready.add_done_callback(
            lambda f: print(f"vla serve: listening on ws://{host}:{f.result()}", flush=True)
        )
        await server.run(host, port, ready, stop)

    asyncio.run(run())
    print(
        f"vla serve: stopped after {server.counts['chunks']} chunks, {server.counts['errors']} errors",
        flush=True,
    )
    return 0
