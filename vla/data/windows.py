"""Training windows: ``n_obs_steps`` frames of history and a horizon of future actions.

For the frame ``t`` of an episode ``[start, stop)`` a window holds the observations at
``t - n_obs_steps + 1 .. t`` and the actions at ``t .. t + horizon - 1``; positions outside the
episode repeat its edge frame and are flagged in ``observation_is_pad`` / ``action_is_pad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

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


class FrameSource(Protocol):
    def rows(self, key: str, rows: np.ndarray) -> np.ndarray: ...


def window_rows(t: int, start: int, stop: int, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """Global rows ``t-before+1 .. t+after-1`` clamped to ``[start, stop)`` (needs one side 1), and the pad mask."""
    raw = np.arange(t - before + 1, t + after, dtype=np.int64)
    clamped = np.minimum(np.maximum(raw, start), stop - 1)  # ufuncs: np.clip costs 10x more here
    return clamped, raw != clamped


def read_window(
    source: FrameSource,
    spec: WindowSpec,
    observation_keys: tuple[str, ...],
    t: int,
    start: int,
    stop: int,
) -> dict[str, Any]:
    """The sample for global frame ``t`` of the episode ``[start, stop)``, as torch tensors."""
    obs_rows, obs_pad = window_rows(t, start, stop, spec.n_obs_steps, 1)
    act_rows, act_pad = window_rows(t, start, stop, 1, spec.horizon)
    sample: dict[str, Any] = {key: torch.from_numpy(source.rows(key, obs_rows)) for key in observation_keys}
    sample["observation_is_pad"] = torch.from_numpy(obs_pad)
    sample[spec.action_key] = torch.from_numpy(source.rows(spec.action_key, act_rows))
    sample["action_is_pad"] = torch.from_numpy(act_pad)
    return sample
