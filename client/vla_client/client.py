"""The client of ``vla serve``: one connection, synchronous requests; numpy, msgpack and websockets only.

- :class:`PolicyClient`: synchronous ``health()`` and ``infer(observation)``; the calling thread sends
  the request and reads the reply itself (websockets' sans-I/O protocol over a plain socket, no
  receiving thread), no compression, ``TCP_NODELAY``.
- :class:`~vla_client.remote.RemoteInference` builds the control loop's asynchronous requester on it,
  reconnecting to a server that goes away.

Why not ``websockets.sync.client``: its receiving thread adds a thread hand-off to every reply, and it
cannot hand a request to the socket without blocking (which the control loop needs: a stalled server
must never block it). Measured through ``vla serve`` with ``scripts/bench_deploy.py
baseline_client=...`` (three runs of alternating clients, 1,800-2,700 chunks each, a loaded 2-core
machine), a client on ``websockets.sync`` spent 0.3-0.5 ms more per chunk at p50 and 0.1-1.2 ms more
at p99 (median of the runs 1.0 ms): more than the 0.5 ms at p99 below which the simpler client was to win.

Example::

    client = PolicyClient("ws://gpu-box:8765")
    spec = client.health()["spec"]
    actions, timing = client.infer({"observation.images.front": image, "observation.state": state,
                                    "instruction": "pick up the red cube"})
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from vla_client.protocol import DEFAULT_MAX_MESSAGE_BYTES, pack, unpack

# While no request is in flight, a small thread reads the socket this often to answer the server's
# keepalive pings (websockets servers ping every 20 s and drop a peer that has not answered in 20 s).
KEEPALIVE_POLL_S = 2.0
_RECV_BUFSIZE = 1 << 18


class ServerError(RuntimeError):
    """The server answered with an error (the message says what it rejected)."""


class PolicyClient:
    """A synchronous connection to a policy server at ``url`` (``ws://host:port`` or ``wss://``).

    The WebSocket protocol is websockets' own (its sans-I/O ``ClientProtocol``: handshake, framing,
    masking, ping/pong, closing), driven by the calling thread: a request is sent and its reply read
    from the socket by the thread that calls :meth:`infer`, with no receiving thread in between (one
    thread wake-up less per round trip than ``websockets.sync``). No compression is negotiated and
    ``TCP_NODELAY`` is set. Between requests a keepalive thread answers the server's pings.
    """

    def __init__(
        self, url: str, timeout_s: float = 10.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one user of the socket at a time: a request or the keepalive
        self._closed = threading.Event()
        self._fragments: list[bytes] = []
        self._pending: collections.deque[bytes | str] = collections.deque()  # complete, not yet read
        self._awaiting: int | None = None  # the id of the request whose reply is due (-1: no id)
        self._unsent = memoryview(b"")  # the part of that request the socket did not take at once
        self._deadline = 0.0
        uri = parse_uri(url)
        # extensions=None: no permessage-deflate (numpy payloads barely compress; deflate costs CPU).
        self._protocol = ClientProtocol(uri, extensions=None, max_size=max_message_bytes)
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout_s)
        try:
            # Small request/reply messages: send each at once instead of waiting to coalesce (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
            self._sock = sock
            self._handshake(time.monotonic() + timeout_s)
        except BaseException:
            sock.close()
            raise
        self._keepalive = threading.Thread(target=self._keep_alive, name="vla-client-keepalive", daemon=True)
        self._keepalive.start()

    # -- the socket, driven by whoever holds the lock ------------------------------------------

    def _flush(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                self._sock.sendall(data)
            else:  # the protocol asks to half-close (closing handshake)
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)

    def _feed(self, deadline: float | None) -> list[Any]:
        """Read once from the socket (until ``deadline``; None: only what is already there)."""
        try:
            if deadline is None:
                self._sock.settimeout(0.0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.url}: no reply within {self.timeout_s:g} s")
                self._sock.settimeout(remaining)
            data = self._sock.recv(_RECV_BUFSIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return []
        except TimeoutError as exc:
            if deadline is None:
                return []
            raise TimeoutError(f"{self.url}: no reply within {self.timeout_s:g} s") from exc
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        self._flush()  # pongs to pings, the close handshake
        events = self._protocol.events_received()
        if not data and not events:
            raise self._protocol.close_exc
        return events

    def _handshake(self, deadline: float) -> None:
        self._protocol.send_request(self._protocol.connect())
        self._flush()
        while True:
            for event in self._feed(deadline):
                if isinstance(event, Response):
                    if self._protocol.handshake_exc is not None:
                        raise self._protocol.handshake_exc
                    return
            if self._protocol.state is not State.CONNECTING:
                raise InvalidHandshake(f"{self.url}: the server did not complete the WebSocket handshake")

    def _message(self, events: list[Any]) -> bytes | str | None:
        """The next complete data message: the oldest one not yet handed out, ``events`` included.

        Every complete message among ``events`` is kept (fragments are joined): one read can hold
        several replies, e.g. the late reply of a timed-out request and the reply now awaited.
        """
        for event in events:
            if not isinstance(event, Frame) or event.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                continue  # pings are answered by the protocol; a close shows up as an EOF
            self._fragments.append(bytes(event.data))
            if event.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._pending.append(data.decode() if event.opcode is Opcode.TEXT else data)
        return self._pending.popleft() if self._pending else None

    def _send(self, message: dict[str, Any], *, wait: bool) -> None:
        """Put ``message`` on the wire; the reply is read by :meth:`_receive` (one request at a time).

        ``wait=False`` writes only what the socket takes at once, so the caller never blocks on the
        network (a control loop); :meth:`_receive` writes whatever is left before reading.
        """
        data = pack(message)
        with self._lock:
            if self._closed.is_set():
                raise ConnectionClosed(None, None)
            if self._awaiting is not None:
                raise RuntimeError(f"{self.url}: request {self._awaiting} is still waiting for its reply")
            if self._protocol.state is not State.OPEN:
                raise self._protocol.close_exc
            self._protocol.send_binary(data)
            frames = b"".join(self._protocol.data_to_send())
            sent = 0
            if not wait and not isinstance(self._sock, ssl.SSLSocket):
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    sent = self._sock.send(frames, socket.MSG_DONTWAIT)
            self._unsent = memoryview(frames)[sent:]
            self._deadline = time.monotonic() + self.timeout_s
            self._awaiting = message.get("id", -1)
            if wait:
                self._write_unsent()

    def _write_unsent(self) -> None:
        if len(self._unsent):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.url}: could not send the request within {self.timeout_s:g} s")
            self._sock.settimeout(remaining)
            self._sock.sendall(self._unsent)
            self._unsent = memoryview(b"")

    def _receive(self) -> dict[str, Any]:
        """The reply to the request :meth:`_send` put on the wire (late replies of older ones skipped)."""
        with self._lock:
            if self._awaiting is None:
                raise RuntimeError(f"{self.url}: no request is waiting for a reply")
            try:
                self._write_unsent()
                while True:
                    raw = self._message([])  # a message an earlier read already brought
                    while raw is None:
                        raw = self._message(self._feed(self._deadline))
                    reply = unpack(raw, self.max_message_bytes)
                    reply_id = reply.get("id")
                    # The late reply of a request that timed out earlier on this connection: skip it.
                    # (A request without an id, health, is never answered with an id.)
                    if not (isinstance(reply_id, int) and (self._awaiting < 0 or reply_id < self._awaiting)):
                        break
            finally:
                self._awaiting = None
                self._unsent = memoryview(b"")
        if reply["type"] == "error":
            raise ServerError(f"{self.url}: {reply.get('error')}")
        return reply

    def _roundtrip(self, message: dict[str, Any]) -> dict[str, Any]:
        self._send(message, wait=True)
        return self._receive()

    def _keep_alive(self) -> None:
        """Between requests, read what the server sent (pings: the protocol answers them)."""
        while not self._closed.wait(KEEPALIVE_POLL_S):
            if not self._lock.acquire(blocking=False):
                continue  # a request is reading the socket: it answers pings itself
            try:
                if self._awaiting is not None:
                    continue  # a reply is due: the request reads it (and the pings before it)
                if self._closed.is_set() or self._protocol.state is not State.OPEN:
                    return
                self._message(self._feed(None))  # nothing is awaited now: stray messages are dropped
                self._pending.clear()
                if self._protocol.state is not State.OPEN:
                    # The server is closing (it stops): finish the handshake and drop the socket now,
                    # or the server waits its whole close timeout for this end to hang up.
                    self._finish_closing()
                    return
            except Exception:  # the connection is gone; the next request reports it
                return
            finally:
                self._lock.release()

    # -- public API ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's status, counters and the policy's spec (``reply["spec"]``)."""
        return self._roundtrip({"type": "health"})

    def infer(self, observation: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
        """The action chunk (H, A) for ``observation`` and the server's timing (ms)."""
        return self.receive_chunk(self._send_infer(observation, wait=True))

    def send_infer(self, observation: Mapping[str, Any]) -> int:
        """Send an ``infer`` request and return its id at once; :meth:`receive_chunk` gets the reply.

        Never waits on the network: what the socket does not take at once is written by
        :meth:`receive_chunk` (so a control loop can send from its own thread and read in another).
        """
        return self._send_infer(observation, wait=False)

    def _send_infer(self, observation: Mapping[str, Any], *, wait: bool) -> int:
        request_id = next(self._ids)
        self._send({"type": "infer", "id": request_id, "observation": dict(observation)}, wait=wait)
        return request_id

    def receive_chunk(self, request_id: int) -> tuple[np.ndarray, dict[str, float]]:
        """The action chunk and server timing of the request :meth:`send_infer` sent."""
        reply = self._receive()
        if reply.get("type") != "chunk" or reply.get("id") != request_id:
            raise ServerError(
                f"{self.url}: expected the chunk of request {request_id}, got {reply.get('type')} {reply.get('id')}"
            )
        return np.asarray(reply["actions"], dtype=np.float32), dict(reply.get("timing", {}))

    def close(self) -> None:
        """Close the connection (a closing handshake, then the socket)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            try:
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close()
                    self._flush()
            except Exception:  # the server is gone: just drop the socket
                pass
            self._finish_closing()
        self._keepalive.join(timeout=KEEPALIVE_POLL_S + 1.0)

    def _finish_closing(self) -> None:
        """Read until the closing handshake ends (the server hangs up), then close the socket.

        The caller holds the lock. A server that is gone or slow to close gets at most 2 s.
        """
        deadline = time.monotonic() + min(self.timeout_s, 2.0)
        try:
            while self._protocol.state is not State.CLOSED:
                self._feed(deadline)
        except Exception:  # the end of the handshake (EOF), or a server gone or too slow
            pass
        finally:
            self._sock.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
