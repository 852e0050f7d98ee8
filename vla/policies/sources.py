"""Where a policy comes from: one registry of loaders, ``kind -> loader(source, device, precision)``.

- ``checkpoint``: a ``vla train`` checkpoint or run directory (:func:`vla.policies.load_policy`);
- ``exported``: a directory written by ``vla export`` (:func:`vla.policies.export.load_exported_policy`);
- ``lerobot``: a lerobot ``pretrained_model`` folder (:mod:`vla.interop.lerobot_policy`, which needs
  the ``lerobot`` extra).

Every command loads a policy through this registry: ``vla eval policy=<kind>`` (which adds its
``scripted`` expert, :mod:`vla.evaluation.loaders`), and ``vla serve`` / ``vla deploy``, which detect
the kind from the files in a directory (:func:`load_stored_policy`). A loader refuses a
``precision`` other than ``auto`` that it cannot honour. Anything a loader returns has ``spec`` and
a stateless ``predict_chunks(batch) -> (B, H, A)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PolicyLoader = Callable[[str | None, str, str], Any]


def only_auto_precision(kind: str, precision: str) -> None:
    """Raise ``ValueError`` for a precision choice a policy of ``kind`` has no way to honour."""
    if precision != "auto":
        raise ValueError(f"precision={precision!r} applies to vla checkpoints; a {kind} policy runs as it is")


def _load_checkpoint(source: str | None, device: str, precision: str = "auto", **options: Any) -> Any:
    """``options``: more :func:`vla.policies.load_policy` keywords (``vla eval flow_noise=...``)."""
    if not source:
        raise ValueError("policy=checkpoint needs checkpoint=<dir>")
    from vla.policies.runtime import load_policy

    return load_policy(source, device=device, precision=precision, **options)


def _load_exported(source: str | None, device: str, precision: str = "auto") -> Any:
    from vla.policies.export import load_exported_policy

    only_auto_precision("exported", precision)
    if device not in ("auto", "cpu"):
        raise ValueError(f"exported policies run on the CPU; device={device!r} is not supported")
    return load_exported_policy(str(source))


def _load_lerobot(source: str | None, device: str, precision: str = "auto") -> Any:
    only_auto_precision("lerobot", precision)
    try:
        from vla.interop.lerobot_policy import load_lerobot_policy
    except ImportError as exc:  # the adapter imports lerobot, an optional extra
        raise NotImplementedError(
            f"policy=lerobot needs the lerobot adapter and `pip install vla[lerobot]`: {exc}"
        ) from exc
    if not source:
        raise ValueError("policy=lerobot needs checkpoint=<dir or hub id of a lerobot policy>")
    return load_lerobot_policy(source, device)


POLICY_LOADERS: dict[str, PolicyLoader] = {
    "checkpoint": _load_checkpoint,
    "exported": _load_exported,
    "lerobot": _load_lerobot,
}


def _is_exported(path: Path) -> bool:
    from vla.policies.export import is_export_dir

    return is_export_dir(path)


def _is_lerobot(path: Path) -> bool:
    from vla.interop.lerobot_policy import is_lerobot_checkpoint

    return is_lerobot_checkpoint(path)


# Tried in order; a directory matching none is read as a vla checkpoint (whose loader names what is missing).
DETECTORS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("exported", _is_exported),
    ("lerobot", _is_lerobot),
)


def policy_kind(path: str | os.PathLike[str]) -> str:
    """``exported``, ``lerobot`` or ``checkpoint``, from the files in ``path``."""
    for kind, matches in DETECTORS:
        if matches(Path(path)):
            return kind
    return "checkpoint"


# The flow sampler's settings (vla.policies.load_policy keywords) and the values that leave it as trained.
SAMPLER_DEFAULTS: dict[str, Any] = {"flow_noise": "fresh", "flow_noise_scale": 1.0, "flow_steps": None}


def load_with_sampler(
    loaders: Mapping[str, PolicyLoader],
    kind: str,
    source: str | None,
    device: str,
    precision: str,
    **sampler: Any,
) -> Any:
    """``loaders[kind](source, device, precision)`` with the sampler settings (:data:`SAMPLER_DEFAULTS`'
    keys) that differ from their defaults, which only a vla checkpoint takes: an export traced its
    sampler into the graph, a lerobot or scripted policy has its own."""
    chosen = {key: value for key, value in sampler.items() if value != SAMPLER_DEFAULTS[key]}
    if not chosen:
        return loaders[kind](source, device, precision)
    if kind != "checkpoint":
        named = " ".join(f"{key}={value}" for key, value in chosen.items())
        where = f" at {source}" if source else ""
        raise ValueError(f"{named} applies to vla checkpoints, not to the {kind} policy{where}")
    return loaders[kind](source, device, precision, **chosen)


def load_stored_policy(
    path: str | os.PathLike[str], device: str = "auto", precision: str = "auto", flow_steps: int | None = None
) -> Any:
    """The policy stored at ``path`` (any kind above, detected), ready for ``predict_chunks`` / ``predict_chunk``.
    ``flow_steps`` (a vla checkpoint with the flow head) overrides its Euler steps per chunk."""
    return load_with_sampler(
        POLICY_LOADERS, policy_kind(path), str(path), device, precision, flow_steps=flow_steps
    )
