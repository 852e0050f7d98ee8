"""vla: vision-language-action policies from demonstrations to robot control loops.

Kept import-light on purpose: ``import vla`` pulls in neither torch nor mujoco. The robot-side client
of ``vla serve`` is its own distribution (``client/``, package :mod:`vla_client`) that needs numpy,
msgpack and websockets only.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_policy(checkpoint: Any, device: str = "auto", **options: Any) -> Any:
    """Load a trained checkpoint as a policy; see :func:`vla.policies.load_policy`."""
    from vla.policies import load_policy as _load

    return _load(checkpoint, device=device, **options)


__all__ = ["__version__", "load_policy"]
