"""Client of ``vla serve``: needs only numpy, msgpack and websockets (it runs on a robot computer).

- :class:`PolicyClient`: one connection, synchronous ``health()`` and ``infer(observation)``.
- :class:`RemoteInference`: the asynchronous requester the control loop uses: ``submit`` returns at
  once, a background thread does the round trip, ``poll`` hands back the chunk. With
  :class:`~vla.deploy.inference.ChunkPlanner` prefetching, the next chunk is requested while the current
  one executes, so the robot never idles waiting for the network.

Example::

    client = PolicyClient("ws://gpu-box:8765")
    spec = client.health()["spec"]
    actions, timing = client.infer({"observation.images.front": image, "observation.state": state,
                                    "instruction": "pick up the red cube"})
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Mapping
from typing import Any

import numpy as np
from websockets.sync.client import connect

from vla.deploy.protocol import DEFAULT_MAX_MESSAGE_BYTES, pack, unpack
from vla.deploy.requester import ChunkResult, ThreadedInference


class ServerError(RuntimeError):
    """The server answered with an error (the message says what it rejected)."""


class PolicyClient:
    """A synchronous connection to a policy server at ``url`` (``ws://host:port``)."""

    def __init__(
        self, url: str, timeout_s: float = 10.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._ids = itertools.count()
        # Entered through an ExitStack: websockets >= 17.1 wants its connection used as a context manager.
        self._exit_stack = contextlib.ExitStack()
        self._ws = self._exit_stack.enter_context(
            connect(url, open_timeout=timeout_s, max_size=max_message_bytes, compression=None)
        )
        # Small request/reply messages: send each at once instead of waiting to coalesce (Nagle).
        self._ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _roundtrip(self, message: dict[str, Any]) -> dict[str, Any]:
        self._ws.send(pack(message))
        reply = unpack(self._ws.recv(timeout=self.timeout_s), self.max_message_bytes)
        if reply["type"] == "error":
            raise ServerError(f"{self.url}: {reply.get('error')}")
        return reply

    def health(self) -> dict[str, Any]:
        """The server's status, counters and the policy's spec (``reply["spec"]``)."""
        return self._roundtrip({"type": "health"})

    def infer(self, observation: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
        """The action chunk (H, A) for ``observation`` and the server's timing (ms)."""
        request_id = next(self._ids)
        reply = self._roundtrip({"type": "infer", "id": request_id, "observation": dict(observation)})
        if reply.get("type") != "chunk" or reply.get("id") != request_id:
            raise ServerError(
                f"{self.url}: expected the chunk of request {request_id}, got {reply.get('type')} {reply.get('id')}"
            )
        return np.asarray(reply["actions"], dtype=np.float32), dict(reply.get("timing", {}))

    def close(self) -> None:
        """Close the connection."""
        self._exit_stack.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteInference:
    """A :class:`~vla.deploy.requester.ChunkRequester` backed by a policy server."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.client = PolicyClient(url, timeout_s)
        self.spec = self.client.health()["spec"]
        self._worker = ThreadedInference(self.client.infer)

    def submit(self, observation: Mapping[str, Any], tag: Any) -> bool:
        """Send ``observation`` for inference in the background; False while a request is in flight."""
        return self._worker.submit(observation, tag)

    def poll(self, timeout: float = 0.0) -> ChunkResult | None:
        """The finished round trip, if any (``server_timing`` holds the server's timing)."""
        return self._worker.poll(timeout)

    def close(self) -> None:
        """Stop the worker and close the connection."""
        self._worker.close()
        self.client.close()
