"""Inference decoupled from the control loop: the planner that prefetches and aligns action chunks.

:class:`ChunkPlanner` turns the chunks of a :class:`~vla_client.requester.ChunkRequester` into one
action per control step with :class:`~vla.policies.executor.ChunkExecutor` semantics (replan every k steps, or temporal ensembling),
and prefetches: it requests the next chunk while ``prefetch`` actions of the current one remain, so the
loop never waits for inference. A chunk predicted from the observation of step s that arrives at step
t is aligned by dropping its first ``t - s`` actions (they were meant for steps already executed).

This module imports numpy and the executor only, so it also runs on a robot computer without torch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla.policies.executor import ChunkExecutor
from vla_client.requester import ChunkRequester, ChunkResult, InferenceLost


@dataclass(frozen=True)
class _Tag:
    episode: int
    step: int  # the control step whose observation the chunk was predicted from
    time: float  # perf_counter at that observation


@dataclass
class ChunkPlanner:
    """Prefetching, aligned chunk execution over a :class:`ChunkRequester`; see the module docstring."""

    requester: ChunkRequester
    executor: ChunkExecutor = field(default_factory=ChunkExecutor)
    n_obs_steps: int = 1
    prefetch: int = 2  # request the next chunk when this many actions of the current one remain
    latencies_s: list[float] = field(default_factory=list)
    server_timings: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stale_chunks: int = 0
    _episode: int = 0
    _step: int = 0
    _remaining: int = 0
    _in_flight: bool = False
    _pending: tuple[np.ndarray, _Tag] | None = None
    _plan_time: float | None = None
    _history: deque[dict[str, Any]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {self.n_obs_steps}")

    @property
    def ensembling(self) -> bool:
        return self.executor.temporal_ensemble is not None

    @property
    def failure(self) -> str | None:
        """Why inference is gone for good (a server that did not come back), or None."""
        return getattr(self.requester, "failure", None)

    def reset(self) -> None:
        """Start a new episode: pending actions are dropped, results of older requests are ignored."""
        self.executor.reset()
        self._episode += 1
        self._step = 0
        self._remaining = 0
        self._pending = None
        self._plan_time = None
        self._history.clear()

    def warmup(self, observation: Mapping[str, Any], timeout: float = 60.0) -> None:
        """Predict the first chunk synchronously, before the clock starts (the robot is at rest).

        While the requester is reconnecting to a lost server, failed requests are retried (the
        robot is at rest); :class:`~vla_client.requester.InferenceLost` when it gives up.
        """
        self._observe(observation, time.perf_counter())
        deadline = time.perf_counter() + timeout
        while self._pending is None:  # results of an older episode's request are dropped: ask again
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no action chunk within {timeout:.0f} s of the first request")
            if not self._in_flight:
                self._request(self._step, time.perf_counter())
            errors = len(self.errors)
            self._collect(self.requester.poll(timeout=0.05))
            if self.failure is not None:
                raise InferenceLost(self.failure)
            if len(self.errors) > errors and not getattr(self.requester, "reconnecting", False):
                raise RuntimeError(f"the first inference failed: {self.errors[-1]}")
        self._history.pop()  # step() observes this step again

    def step(self, observation: Mapping[str, Any], now: float) -> tuple[np.ndarray | None, float | None]:
        """The action for this control step (None: nothing to execute) and the age of its plan in seconds."""
        self._observe(observation, now)
        self._collect(self.requester.poll())
        if self._pending is not None and (self.ensembling or self.executor.needs_chunk()):
            chunk, tag = self._pending
            self._pending = None
            usable = chunk[self._step - tag.step :]
            if len(usable) == 0:
                self.stale_chunks += 1
            else:
                self.executor.push_chunk(usable)
                self._remaining = min(self.executor.replan_every, len(usable))
                self._plan_time = tag.time
        if (
            not self._in_flight
            and self._pending is None
            and (self.ensembling or self._remaining <= self.prefetch)
        ):
            self._request(self._step, now)
        action = None
        if self.ensembling or not self.executor.needs_chunk():
            try:
                action = self.executor.next_action()
                self._remaining -= 1
            except RuntimeError:  # an ensemble whose chunks all ran out
                action = None
        self._step += 1
        return action, (None if action is None or self._plan_time is None else now - self._plan_time)

    def _observe(self, observation: Mapping[str, Any], now: float) -> None:
        self._history.append(dict(observation))
        while len(self._history) > self.n_obs_steps:
            self._history.popleft()

    def _request(self, step: int, now: float) -> None:
        if self.requester.submit(self._stacked_history(), _Tag(self._episode, step, now)):
            self._in_flight = True

    def _collect(self, result: ChunkResult | None) -> None:
        if result is None:
            return
        self._in_flight = False
        if result.error is not None:
            self.errors.append(result.error)
            return
        self.latencies_s.append(result.latency_s)
        if result.server_timing:
            self.server_timings.append(result.server_timing)
        if result.tag.episode == self._episode and result.chunk is not None:
            self._pending = (result.chunk, result.tag)

    def _stacked_history(self) -> dict[str, Any]:
        """The latest observation, or a (T, ...) history padded by repeating the oldest frame."""
        latest = self._history[-1]
        if self.n_obs_steps == 1:
            return latest
        frames = [self._history[0]] * (self.n_obs_steps - len(self._history)) + list(self._history)
        stacked = {
            k: np.stack([f[k] for f in frames]) for k, v in latest.items() if isinstance(v, np.ndarray)
        }
        return {**latest, **stacked}
