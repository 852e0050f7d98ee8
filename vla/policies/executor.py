"""Turn predicted action chunks into one action per control step.

Prediction is stateless (``Policy.predict_chunks``); this executor is the one explicit piece of state
between chunks. Two modes:

- replanning: execute the first ``replan_every`` actions of each chunk, then ask for a new one;
- temporal ensembling (ACT, Zhao et al. 2023): a new chunk every step, and the action for step t is the
  weighted mean of every chunk's prediction for t, with weights ``exp(-m * i)`` where ``i`` is the age
  of the chunk (i = 0 the oldest, as in ACT), so older predictions count more for m > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla.policy_spec import DEFAULT_REPLAN_EVERY


@dataclass
class ChunkExecutor:
    """Feed chunks with :meth:`push_chunk` whenever :meth:`needs_chunk` is true; read :meth:`next_action`."""

    replan_every: int = DEFAULT_REPLAN_EVERY
    temporal_ensemble: float | None = None  # ACT's m; None disables ensembling
    _queue: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    # Ensembling: chunks still covering future steps, as (chunk, index of the next step it predicts).
    _live: list[tuple[np.ndarray, int]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if self.temporal_ensemble is not None and self.temporal_ensemble < 0:
            raise ValueError(f"temporal_ensemble (m) must be >= 0, got {self.temporal_ensemble}")

    def reset(self) -> None:
        """Forget every pending action (call at episode start)."""
        self._queue.clear()
        self._live.clear()

    def needs_chunk(self) -> bool:
        """Whether the next action requires a fresh chunk first."""
        if self.temporal_ensemble is not None:
            return True
        return not self._queue

    def push_chunk(self, chunk: np.ndarray) -> None:
        """Hand over a chunk of shape (H, A) predicted from the latest observation."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] == 0:
            raise ValueError(f"an action chunk must have shape (H, A) with H >= 1, got {chunk.shape}")
        if not np.isfinite(chunk).all():
            raise ValueError("the action chunk contains NaN or infinite values")
        if self.temporal_ensemble is not None:
            self._live.append((chunk, 0))
        else:
            self._queue = list(chunk[: self.replan_every])

    def next_action(self) -> np.ndarray:
        """The action for this control step; raises if no chunk covers it."""
        if self.temporal_ensemble is None:
            if not self._queue:
                raise RuntimeError(
                    "no pending action: push_chunk() a new chunk first (needs_chunk() was true)"
                )
            return self._queue.pop(0)
        if not self._live:
            raise RuntimeError("no pending action: push_chunk() a new chunk first")
        predictions = np.stack([chunk[i] for chunk, i in self._live])
        weights = np.exp(-self.temporal_ensemble * np.arange(len(predictions), dtype=np.float64))
        action = (weights[:, None] * predictions).sum(0) / weights.sum()
        # Advance every chunk by one step and drop the ones that have run out.
        self._live = [(chunk, i + 1) for chunk, i in self._live if i + 1 < len(chunk)]
        return action.astype(np.float32)
