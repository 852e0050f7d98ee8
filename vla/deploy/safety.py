"""What stands between the policy and the motors: limits, rate limiting, a watchdog and a clean stop.

- :class:`ActionFilter` clips every action to the declared limits and bounds its change per step.
- :class:`Watchdog` decides, each step, whether the policy may act or the robot must hold: when the
  observation arrived late, when the action to execute was planned from an observation older than a
  limit, or when no action is available at all.
- :func:`stop_on_signals` turns Ctrl-C and SIGTERM into a flag the loop polls, so the loop (not the
  signal handler) sends the hold action and saves its statistics before returning.
"""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from vla.signals import handling_signals


@dataclass
class ActionFilter:
    """Clip to ``[low, high]`` and bound ``|a_t - a_{t-1}|`` by ``max_delta`` (per dimension)."""

    low: np.ndarray | None = None
    high: np.ndarray | None = None
    max_delta: np.ndarray | float | None = None
    clipped_steps: int = 0
    rate_limited_steps: int = 0
    _last: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.low is not None:
            self.low = np.asarray(self.low, dtype=np.float32)
        if self.high is not None:
            self.high = np.asarray(self.high, dtype=np.float32)
        if self.low is not None and self.high is not None and np.any(self.low > self.high):
            raise ValueError(f"action limits are inverted: low {self.low} > high {self.high}")
        if self.max_delta is not None and np.any(np.asarray(self.max_delta) <= 0):
            raise ValueError(f"max_delta must be positive, got {self.max_delta}")

    def _clip(self, action: np.ndarray) -> np.ndarray:
        if self.low is None and self.high is None:
            return action
        return np.clip(action, self.low, self.high)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """The action to send instead of the policy's ``action``; NaN or inf is an error."""
        action = np.asarray(action, dtype=np.float32)
        if not np.isfinite(action).all():
            raise ValueError(f"the policy produced a non-finite action: {action}")
        safe = self._clip(action)
        if not np.array_equal(safe, action):
            self.clipped_steps += 1
        if self.max_delta is not None and self._last is not None:
            limited = np.clip(safe, self._last - self.max_delta, self._last + self.max_delta)
            if not np.array_equal(limited, safe):
                self.rate_limited_steps += 1
            safe = limited
        self._last = safe
        return safe

    def hold(self, hold_action: np.ndarray) -> np.ndarray:
        """The hold action, clipped but not rate limited (holding must never be delayed)."""
        safe = self._clip(np.asarray(hold_action, dtype=np.float32))
        self._last = safe
        return safe

    def reset(self) -> None:
        """Forget the previous action (a new episode starts from rest)."""
        self._last = None


@dataclass
class Watchdog:
    """Trip (hold the robot) when observations or plans are late beyond their limits.

    ``max_observation_s``: the longest ``get_observation()`` may take; ``max_plan_age_s``: the oldest an
    executed action's source observation may be (a plan is executed open loop, so this bounds how long
    the robot moves without fresh perception). ``None`` disables a check.
    """

    max_observation_s: float | None = 0.1
    max_plan_age_s: float | None = 1.0
    trips: Counter[str] = field(default_factory=Counter)

    def check(self, observation_s: float, plan_age_s: float | None) -> str | None:
        """The reason to hold this step, or None when the policy may act. ``plan_age_s`` None: no action."""
        reason = None
        if plan_age_s is None:
            reason = "no_action"
        elif self.max_observation_s is not None and observation_s > self.max_observation_s:
            reason = "late_observation"
        elif self.max_plan_age_s is not None and plan_age_s > self.max_plan_age_s:
            reason = "stale_plan"
        if reason is not None:
            self.trips[reason] += 1
        return reason


@dataclass
class StopRequest:
    """Set by a signal handler; the loop polls ``requested`` once per step."""

    requested: bool = False
    reason: str | None = None

    def request(self, reason: str) -> None:
        """Ask the loop to stop at its next step."""
        self.reason = self.reason or reason
        self.requested = True


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set ``stop.requested`` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere the block still yields the flag
    (another thread may set it) and leaves the process's handlers alone.
    """
    stop = stop or StopRequest()

    def request_stop(signum: int, _frame: object) -> None:
        stop.request(signal.Signals(signum).name)

    with handling_signals(request_stop, (signal.SIGINT, signal.SIGTERM)):
        yield stop
