"""The fixed-rate control loop: absolute deadlines, deadline accounting, safety, clean stop.

Each tick sleeps until its absolute deadline ``t0 + i * period`` (``time.sleep`` until ~1 ms before,
then a busy spin, because ``sleep`` wakes up late by up to a scheduler quantum), reads the observation,
asks the :class:`~vla.deploy.inference.ChunkPlanner` for this step's action (never waiting for
inference), passes it through the watchdog and the action filter, and sends it. Deadlines are computed
from ``t0``, never from "now", so the rate never drifts; a tick that overruns its period skips to the
next deadline on the same grid and is counted.

The loop records what a robot engineer asks about: achieved rate, period jitter (|actual period -
nominal|) p50/p99, overruns, inference latency p50/p99, holds by reason. It prints a compact live
status line and returns a JSON-ready summary.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from vla.deploy.inference import ChunkPlanner
from vla.deploy.robot import FeatureMap, Robot
from vla.deploy.safety import ActionFilter, StopRequest, Watchdog

# While the loop runs, a thread waiting for the GIL (the loop thread waking up while the inference thread
# runs Python) waits at most this long instead of CPython's default 5 ms.
_SWITCH_INTERVAL_S = 0.0002


def sleep_until(deadline: float, spin_s: float = 0.001) -> None:
    """Return at ``deadline`` (a ``time.perf_counter`` value): sleep most of the way, spin the rest."""
    remaining = deadline - time.perf_counter()
    if remaining > spin_s:
        time.sleep(remaining - spin_s)
    while time.perf_counter() < deadline:
        pass


def percentiles_ms(values_s: list[float] | np.ndarray) -> dict[str, float | int]:
    """p50/p99/max (milliseconds) and count of a list of durations in seconds."""
    values = np.asarray(values_s, dtype=np.float64) * 1e3
    if values.size == 0:
        return {"n": 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {
        "p50": round(float(p50), 4),
        "p99": round(float(p99), 4),
        "max": round(float(values.max()), 4),
        "n": int(values.size),
    }


@dataclass
class LoopConfig:
    """How fast and how long to run, and how to report."""

    hz: float = 50.0
    max_steps: int | None = None
    spin_s: float = 0.001
    status_every_s: float = 0.5
    status_stream: TextIO | None = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        if not self.hz > 0:
            raise ValueError(f"hz must be positive, got {self.hz}")


@dataclass
class LoopRecord:
    """Raw per-tick measurements of one run."""

    ticks: list[float] = field(default_factory=list)  # when each tick started (perf_counter)
    lateness: list[float] = field(default_factory=list)  # tick start - its deadline
    work: list[float] = field(default_factory=list)  # observation + planning + sending
    observation: list[float] = field(default_factory=list)  # get_observation() alone
    overruns: int = 0
    skipped_ticks: int = 0
    holds: Counter[str] = field(default_factory=Counter)

    def summary(self, hz: float) -> dict[str, Any]:
        """Achieved rate, jitter, overruns and step timings of this run."""
        ticks = np.asarray(self.ticks)
        periods = np.diff(ticks)
        span = float(ticks[-1] - ticks[0]) if len(ticks) > 1 else 0.0
        return {
            "hz": hz,
            "steps": len(ticks),
            "duration_s": round(span, 4),
            "achieved_hz": round((len(ticks) - 1) / span, 4) if span > 0 else None,
            "period_jitter_ms": percentiles_ms(np.abs(periods - 1.0 / hz)),
            "wake_lateness_ms": percentiles_ms(self.lateness),
            "work_ms": percentiles_ms(self.work),
            "observation_ms": percentiles_ms(self.observation),
            "overruns": self.overruns,
            "skipped_ticks": self.skipped_ticks,
            "holds": dict(self.holds),
        }


@contextlib.contextmanager
def _short_gil_switch() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class _StatusLine:
    """A compact live status line, at most every ``every_s`` seconds."""

    def __init__(self, stream: TextIO | None, every_s: float) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self.every_s = every_s if self.tty else max(every_s, 5.0)
        self.last = 0.0

    def maybe_print(self, now: float, record: LoopRecord, planner: ChunkPlanner, hz: float) -> None:
        if self.stream is None or now - self.last < self.every_s or len(record.ticks) < 3:
            return
        self.last = now
        recent = np.asarray(record.ticks[-500:])
        rate = (len(recent) - 1) / (recent[-1] - recent[0])
        jitter = np.abs(np.diff(recent) - 1.0 / hz) * 1e3
        latency = np.asarray(planner.latencies_s[-100:] or [np.nan]) * 1e3
        line = (
            f"step {len(record.ticks):6d} | {rate:6.2f} Hz | jitter p50 {np.percentile(jitter, 50):.3f} "
            f"p99 {np.percentile(jitter, 99):.3f} ms | overruns {record.overruns} | infer p50 "
            f"{np.nanpercentile(latency, 50):.1f} p99 {np.nanpercentile(latency, 99):.1f} ms | holds {sum(record.holds.values())}"
        )
        print(line, end="\r" if self.tty else "\n", file=self.stream, flush=True)

    def close(self) -> None:
        if self.stream is not None and self.tty and self.last:
            print(file=self.stream)


def run_loop(
    robot: Robot,
    planner: ChunkPlanner,
    instruction: str,
    config: LoopConfig,
    action_filter: ActionFilter | None = None,
    watchdog: Watchdog | None = None,
    stop: StopRequest | None = None,
    done: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Drive a connected ``robot`` at ``config.hz`` until ``done()``, ``max_steps`` or a stop request.

    The planner must be warmed up (:meth:`ChunkPlanner.warmup`) or it holds until its first chunk
    arrives; while inference is lost (a server reconnecting) the watchdog holds the robot, and once
    the planner reports a ``failure`` the loop stops (``stopped_by`` "inference_lost: ...").
    Whatever ends the loop (a stop request, an exception), the robot is sent its hold action.
    Returns the summary of :meth:`LoopRecord.summary` plus inference figures and ``stopped_by``.
    """
    features = FeatureMap.from_features(robot.observation_features, robot.action_features)
    action_filter = action_filter or ActionFilter()
    watchdog = watchdog or Watchdog()
    stop = stop or StopRequest()
    record = LoopRecord()
    status = _StatusLine(config.status_stream, config.status_every_s)
    period = 1.0 / config.hz
    stopped_by = "max_steps"
    final_command: dict[str, float] = {}
    try:
        with _short_gil_switch():
            start = time.perf_counter()
            deadline = start
            while config.max_steps is None or len(record.ticks) < config.max_steps:
                if stop.requested:
                    stopped_by = f"signal:{stop.reason}" if stop.reason else "stop"
                    break
                if done is not None and done():
                    stopped_by = "done"
                    break
                if planner.failure is not None:  # inference gone for good: stop, holding
                    stopped_by = f"inference_lost: {planner.failure}"
                    break
                sleep_until(deadline, config.spin_s)
                tick = time.perf_counter()
                record.ticks.append(tick)
                record.lateness.append(tick - deadline)
                flat = robot.get_observation()
                observed = time.perf_counter()
                record.observation.append(observed - tick)
                action, plan_age = planner.step(features.to_observation(flat, instruction), tick)
                reason = watchdog.check(observed - tick, plan_age)
                if reason is None:
                    assert action is not None
                    command = action_filter(action)
                else:
                    record.holds[reason] += 1
                    command = action_filter.hold(features.action_from_dict(robot.hold_action()))
                robot.send_action(features.action_to_dict(command))
                now = time.perf_counter()
                record.work.append(now - tick)
                deadline += period
                if now > deadline:  # overran the period: skip to the next deadline on the same grid
                    missed = math.ceil((now - deadline) / period)
                    record.overruns += 1
                    record.skipped_ticks += missed
                    deadline += missed * period
                status.maybe_print(now, record, planner, config.hz)
    except BaseException as exc:
        stopped_by = f"error:{type(exc).__name__}: {exc}"
        raise
    finally:
        status.close()
        final_command = _hold(robot, features, action_filter)
    summary = record.summary(config.hz)
    summary.update(
        inference_latency_ms=percentiles_ms(planner.latencies_s),
        server_timing_ms=_server_timing(planner.server_timings),
        inference_errors=planner.errors[:5],
        num_inference_errors=len(planner.errors),
        stale_chunks=planner.stale_chunks,
        clipped_steps=action_filter.clipped_steps,
        rate_limited_steps=action_filter.rate_limited_steps,
        stopped_by=stopped_by,
        final_action="hold",
        final_command=final_command,
    )
    return summary


def _hold(robot: Robot, features: FeatureMap, action_filter: ActionFilter) -> dict[str, float]:
    """Leave the robot holding: the last command any run sends. Returns the command sent."""
    command = features.action_to_dict(action_filter.hold(features.action_from_dict(robot.hold_action())))
    robot.send_action(command)
    return command


def _server_timing(timings: list[dict[str, float]]) -> dict[str, float]:
    """Median of each server-side timing field (ms) over a run."""
    if not timings:
        return {}
    keys = sorted({k for t in timings for k in t})
    return {k: round(float(np.median([t[k] for t in timings if k in t])), 4) for k in keys}
