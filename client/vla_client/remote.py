"""Remote inference for the control loop: :class:`RemoteInference`, a policy server as a requester.

``submit`` returns at once, a background thread does the round trip over a
:class:`~vla_client.client.PolicyClient`, ``poll`` hands back the chunk; with ``vla deploy``'s
``ChunkPlanner`` prefetching, the next chunk is requested while the current one executes. A server
that goes away is reconnected to (:class:`Reconnect`) while the loop holds the robot. Like the
client, this needs only numpy, msgpack and websockets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from vla_client.client import PolicyClient, ServerError
from vla_client.requester import ChunkResult, ThreadedInference


@dataclass(frozen=True)
class Reconnect:
    """How :class:`RemoteInference` gets a lost server back: attempts ``first_delay_s`` apart,
    doubling up to ``max_delay_s``, until ``give_up_after_s`` seconds after the loss."""

    first_delay_s: float = 0.25
    max_delay_s: float = 5.0
    give_up_after_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
        return min(self.first_delay_s * 2 ** (attempt - 1), self.max_delay_s)


# What a lost connection raises: the socket's errors (refused, reset, timed out), the WebSocket's close.
CONNECTION_ERRORS = (OSError, ConnectionClosed, InvalidHandshake)


@dataclass(frozen=True)
class _Redial:
    """A request made while the server is lost: the worker reconnects, then does the round trip."""

    observation: Mapping[str, Any]


class RemoteInference:
    """A :class:`~vla_client.requester.ChunkRequester` backed by a policy server.

    ``submit`` encodes the observation and hands it to the socket in the calling thread (never
    blocking on the network), so the request is on its way before any thread switch; the background
    thread only waits for the reply (and writes what the socket did not take at once).

    A lost server (the connection closed, reset, refused, or a reply past ``timeout_s``) is
    announced once through ``notify``; while it is lost (``reconnecting``) ``submit`` hands the
    background thread a reconnection attempt instead of a request, no more often than ``reconnect``
    allows, and the caller (the control loop) holds the robot meanwhile. A server that comes back
    serving the same policy spec is used again; one that stays away past
    ``reconnect.give_up_after_s``, or comes back with another spec, sets ``failure`` (inference is
    gone for good).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        *,
        reconnect: Reconnect | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.reconnect = reconnect or Reconnect()
        self._notify = notify or (lambda message: None)
        self.client: PolicyClient | None = PolicyClient(url, timeout_s)
        self.spec = self.client.health()["spec"]
        self.failure: str | None = None
        self.losses = 0  # times the server was lost
        self.reconnects = 0  # times it came back
        self._lost_at = 0.0
        self._attempts = 0
        self._next_attempt = 0.0
        self._worker = ThreadedInference(self._finish)

    @property
    def reconnecting(self) -> bool:
        """Whether the server is lost and being reconnected to (requests fail until it is back)."""
        return self.client is None and self.failure is None

    def submit(self, observation: Mapping[str, Any], tag: Any) -> bool:
        """Send ``observation`` for inference in the background; False while a request is in flight,
        while waiting for the next reconnection attempt, and once inference is gone for good."""
        if self._worker.busy or self.failure is not None:
            return False
        started = time.perf_counter()  # the round trip is timed from here: encoding and sending count
        ticket: int | Exception | _Redial
        if self.client is None:  # lost: the background thread reconnects first (it may block)
            if time.monotonic() < self._next_attempt:
                return False
            ticket = _Redial(observation)
        else:
            try:
                ticket = self.client.send_infer(observation)
            except Exception as exc:  # reported through poll(), like any failed round trip
                ticket = exc
        return self._worker.submit(ticket, tag, started=started)

    def _finish(self, ticket: int | Exception | _Redial) -> tuple[np.ndarray, dict[str, float]]:
        """The background thread's side of a request (the only thread that replaces the client)."""
        if isinstance(ticket, _Redial):
            client = self._redial()
            return client.infer(ticket.observation)
        try:
            if isinstance(ticket, Exception):
                raise ticket
            assert self.client is not None
            return self.client.receive_chunk(ticket)
        except CONNECTION_ERRORS as exc:
            self._lose(exc)
            raise

    def _lose(self, exc: BaseException) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self.losses += 1
        self._lost_at = time.monotonic()
        self._attempts = 0
        self._next_attempt = self._lost_at  # the first attempt right away
        reason = f"{type(exc).__name__}: {exc}".strip()
        self._notify(f"lost the policy server at {self.url} ({reason}); holding the robot and reconnecting")
        with contextlib.suppress(Exception):
            client.close()

    def _redial(self) -> PolicyClient:
        """Connect again (one attempt); on failure schedule the next one, or give up."""
        self._attempts += 1
        try:
            client = PolicyClient(self.url, self.timeout_s)
            spec = client.health()["spec"]
        except Exception as exc:
            lost_for = time.monotonic() - self._lost_at
            if lost_for + self.reconnect.delay(self._attempts) > self.reconnect.give_up_after_s:
                self.failure = (
                    f"lost the policy server at {self.url} and could not reconnect in {lost_for:.1f} s "
                    f"({self._attempts} attempts; last: {type(exc).__name__}: {exc})"
                )
                self._notify(self.failure)
            self._next_attempt = time.monotonic() + self.reconnect.delay(self._attempts)
            raise ConnectionError(f"{self.url}: reconnection attempt {self._attempts} failed: {exc}") from exc
        if spec != self.spec:
            client.close()
            self.failure = f"the policy server at {self.url} came back serving another policy (spec {spec})"
            self._notify(self.failure)
            raise ServerError(self.failure)
        self.client = client
        self.reconnects += 1
        self._notify(
            f"reconnected to the policy server at {self.url} after {time.monotonic() - self._lost_at:.1f} s "
            f"({self._attempts} attempt{'s' if self._attempts > 1 else ''})"
        )
        return client

    def poll(self, timeout: float = 0.0) -> ChunkResult | None:
        """The finished round trip, if any (``server_timing`` holds the server's timing)."""
        return self._worker.poll(timeout)

    def close(self) -> None:
        """Stop the worker and close the connection."""
        self._worker.close()
        if self.client is not None:
            self.client.close()
