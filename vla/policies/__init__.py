"""Policy runtime: load a checkpoint and turn observations into actions (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vla.policies.executor import ChunkExecutor
from vla.policy_spec import PolicySpec

if TYPE_CHECKING:  # the runtime imports torch: loaded by load_policy, on first use
    from vla.policies.runtime import Policy


def load_policy(checkpoint: Any, device: str = "auto", **options: Any) -> Policy:
    """Load a trained checkpoint (or run) directory as a :class:`~vla.policies.runtime.Policy`.

    ``options`` go to :func:`vla.policies.runtime.load_policy` (``replan_every``,
    ``temporal_ensemble``, ``max_age_s``, ``use_ema``, ``precision``).
    """
    from vla.policies.runtime import load_policy as _load

    return _load(checkpoint, device=device, **options)


__all__ = ["ChunkExecutor", "Policy", "PolicySpec", "load_policy"]
