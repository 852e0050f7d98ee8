"""The policies ``vla eval`` can evaluate: ``policy=<kind>`` -> a loader ``(source, device, precision) -> policy``.

``checkpoint`` and ``lerobot`` are the loaders of :mod:`vla.policies.sources` (every command loads a
policy the same way); ``scripted`` replays the suite's scripted expert (:class:`ScriptedPolicy`),
which exists only inside an evaluation. Anything with ``spec`` (exposing ``n_obs_steps``) and a
stateless ``predict_chunks(batch) -> (B, H, A)`` can be evaluated: register another kind with
``POLICY_LOADERS["name"] = loader``.
"""

from __future__ import annotations

from typing import Any

from vla.policies.sources import POLICY_LOADERS as STORED_POLICY_LOADERS
from vla.policies.sources import PolicyLoader, load_with_sampler, only_auto_precision


def _load_scripted(source: str | None, device: str, precision: str = "auto") -> Any:
    from vla.evaluation.scripted import ScriptedPolicy

    only_auto_precision("scripted", precision)
    return ScriptedPolicy()


POLICY_LOADERS: dict[str, PolicyLoader] = {
    "checkpoint": STORED_POLICY_LOADERS["checkpoint"],
    "scripted": _load_scripted,
    "lerobot": STORED_POLICY_LOADERS["lerobot"],
}


def load_eval_policy(
    kind: str, source: str | None = None, device: str = "auto", precision: str = "auto",
    flow_noise: str = "fresh", flow_noise_scale: float = 1.0, flow_steps: int | None = None,
) -> Any:  # fmt: skip
    """The policy of ``kind`` (``checkpoint``, ``scripted``, ``lerobot``, ...) from ``source``;
    ``flow_noise`` other than ``fresh``, ``flow_noise_scale`` other than 1 and ``flow_steps`` apply to
    vla checkpoints only."""
    if kind not in POLICY_LOADERS:
        raise ValueError(f"unknown policy kind {kind!r}; known: {sorted(POLICY_LOADERS)}")
    return load_with_sampler(POLICY_LOADERS, kind, source, device, precision, flow_noise=flow_noise,
                             flow_noise_scale=flow_noise_scale, flow_steps=flow_steps)  # fmt: skip
