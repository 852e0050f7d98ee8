"""One episode in one env, with a probe read after every step: the diagnostics' rollout.

``vla eval`` runs episodes in worker pools and keeps outcomes; a diagnostic (``scripts/reach_errors.py``,
``scripts/tabletop_targets.py``) needs what the simulator knows along the way (where the hand was),
which the policy never sees. :func:`trace_episode` rolls the policy out as ``vla eval`` does (the
policy's own replanning through ``Policy.act``) and returns the probe's readings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def trace_episode(
    env: Any, policy: Any, seed: int, probe: Callable[[], np.ndarray], max_steps: int
) -> tuple[np.ndarray, bool]:
    """Reset ``env`` on ``seed``, run ``policy`` until the episode ends or ``max_steps``; return
    ``probe()`` after every step, stacked (steps, ...), and whether the episode succeeded."""
    observation, _ = env.reset(seed=seed)
    policy.reset(observation["instruction"])
    readings, success = [], False
    for _ in range(max_steps):
        observation, _, terminated, truncated, info = env.step(policy.act(observation))
        readings.append(np.array(probe(), dtype=np.float64))
        if terminated or truncated:
            success = bool(info["success"])
            break
    return np.stack(readings), success
