"""Policy runtime: load a checkpoint and turn observations into actions (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vla.policies.executor import ChunkExecutor

if TYPE_CHECKING:
    from vla.policies.runtime import Policy, PolicySpec


def load_policy(checkpoint: Any, device: str = "auto") -> Policy:
    """Load a trained checkpoint directory as a :class:`~vla.policies.runtime.Policy`."""
    from vla.policies.runtime import load_policy as _load

    return _load(checkpoint, device=device)


__all__ = ["ChunkExecutor", "Policy", "PolicySpec", "load_policy"]
