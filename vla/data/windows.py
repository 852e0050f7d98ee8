"""Training windows: ``n_obs_steps`` frames of history and a horizon of future actions.

For the frame ``t`` of an episode ``[start, stop)`` a window holds the observations at
``t - n_obs_steps + 1 .. t`` and the actions at ``t .. t + horizon - 1``; positions outside the
episode repeat its edge frame and are flagged in ``observation_is_pad`` / ``action_is_pad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla.features import ACTION_KEY


@dataclass(frozen=True)
class WindowSpec:
    """What one training sample holds. ``observation_keys=None`` means every non-action feature."""

    n_obs_steps: int = 2
    horizon: int = 16
    observation_keys: tuple[str, ...] | None = None
    action_key: str = ACTION_KEY

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1 or self.horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {self.n_obs_steps}, {self.horizon}")
        if self.observation_keys is not None:
            object.__setattr__(self, "observation_keys", tuple(self.observation_keys))


def window_rows(
    t: np.ndarray, start: np.ndarray, stop: np.ndarray, before: int, after: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``t-before+1 .. t+after-1`` of each anchor ``t`` (B,), clamped to its episode ``[start, stop)``.

    Returns the global rows (B, before + after - 1) and the pad mask (True where clamped).
    """
    raw = t[:, None] + np.arange(1 - before, after, dtype=np.int64)
    clamped = np.minimum(np.maximum(raw, start[:, None]), stop[:, None] - 1)  # ufuncs: np.clip is slower
    return clamped, raw != clamped
