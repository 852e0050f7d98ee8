"""The scripted expert as a policy: an upper-bound reference for ``vla eval`` and a harness test.

Experts read the simulator (Meta-World's experts need its 39-D state, tabletop experts the object
poses), which a policy never sees. So the expert runs next to its env in the worker process: the
harness asks workers for it (:attr:`ScriptedPolicy.uses_expert`) and each observation then carries the
expert's action under :data:`~vla.evaluation.vector.EXPERT_ACTION_KEY`. This policy just returns it as a
one-step chunk, which keeps it a plain, stateless implementation of the Policy protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.evaluation.vector import EXPERT_ACTION_KEY


@dataclass(frozen=True)
class ScriptedSpec:
    """The part of a PolicySpec the harness reads: one observation frame, one-step chunks."""

    n_obs_steps: int = 1
    chunk_size: int = 1
    camera_keys: tuple[str, ...] = ()
    name: str = "scripted-expert"


class ScriptedPolicy:
    """Replays the suite's scripted expert (``vla.envs.registry.make_expert``) through the protocol."""

    uses_expert = True  # the harness attaches EXPERT_ACTION_KEY to every observation

    def __init__(self) -> None:
        self.spec = ScriptedSpec()

    def predict_chunks(self, batch: Mapping[str, Any]) -> np.ndarray:
        """``(B, 1, A)``: the expert's action for the latest frame of each observation history."""
        if EXPERT_ACTION_KEY not in batch:
            raise KeyError(
                f"the scripted policy needs {EXPERT_ACTION_KEY!r} in its batch; it only runs inside "
                "vla.evaluation (whose env workers compute the expert's action)"
            )
        actions = np.asarray(batch[EXPERT_ACTION_KEY], dtype=np.float32)
        if actions.ndim != 3:
            raise ValueError(f"{EXPERT_ACTION_KEY!r} must have shape (B, T, A), got {actions.shape}")
        return actions[:, -1:, :]
