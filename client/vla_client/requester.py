"""Background inference: requesters that predict away from the control loop thread.

A requester's ``submit(observation, tag)`` returns at once; ``poll()`` hands back a finished
:class:`ChunkResult` (or None). :class:`ThreadedInference` runs any ``predict`` function in a daemon
thread: a policy's ``predict_chunk`` in-process (``vla deploy`` without a server), or a round trip
to a policy server (:class:`~vla_client.remote.RemoteInference`). Standard library and numpy only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class ChunkResult:
    """One finished request: the chunk (H, A) or an error, and how long it took."""

    tag: Any
    chunk: np.ndarray | None
    latency_s: float  # submit -> result available, as the requester saw it
    error: str | None = None
    server_timing: dict[str, float] | None = None  # decode/infer/encode ms when a server answered


class InferenceLost(RuntimeError):
    """Inference is gone for good (a policy server that did not come back); the message says why."""


class ChunkRequester(Protocol):
    """Background inference: one request in flight at a time.

    A requester that can lose its inference (a remote server) may also have ``reconnecting``
    (bool: results fail for now, requests resume by themselves) and ``failure`` (None, or why
    inference is gone for good); ``vla deploy``'s ``ChunkPlanner`` reads both.
    """

    def submit(self, observation: Mapping[str, Any], tag: Any) -> bool: ...

    def poll(self, timeout: float = 0.0) -> ChunkResult | None: ...

    def close(self) -> None: ...


class ThreadedInference:
    """Run ``predict(observation) -> (H, A)`` (or ``((H, A), server timing)``) in a daemon thread."""

    def __init__(self, predict: Callable[[Mapping[str, Any]], Any]) -> None:
        self._predict = predict
        self._cond = threading.Condition()
        self._request: tuple[Any, Any, float] | None = None
        self._result: ChunkResult | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vla-inference", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a request is in flight (``submit`` would return False)."""
        return self._busy or self._closed

    def submit(self, observation: Any, tag: Any, started: float | None = None) -> bool:
        """Start predicting from ``observation``; False (and nothing done) while a request is in flight.

        ``started`` (a ``perf_counter`` time) is where the latency is measured from; default now.
        """
        with self._cond:
            if self._busy or self._closed:
                return False
            self._busy = True
            self._request = (observation, tag, time.perf_counter() if started is None else started)
            self._cond.notify_all()
            return True

    def poll(self, timeout: float = 0.0) -> ChunkResult | None:
        """The finished result, if any (waiting up to ``timeout`` seconds for it)."""
        with self._cond:
            if self._result is None and timeout > 0:
                self._cond.wait_for(lambda: self._result is not None, timeout)
            result, self._result = self._result, None
            return result

    def close(self) -> None:
        """Stop the worker thread (an inference in progress finishes first)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                assert self._request is not None
                observation, tag, started = self._request
                self._request = None
            chunk, error, timing = None, None, None
            try:
                output = self._predict(observation)
                if isinstance(output, tuple):  # a remote predict also returns the server's timing
                    output, timing = output
                chunk = np.asarray(output, dtype=np.float32)
            except Exception as exc:  # a failed inference must reach the loop, not kill the thread
                error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._result = ChunkResult(tag, chunk, time.perf_counter() - started, error, timing)
                self._busy = False
                self._cond.notify_all()
