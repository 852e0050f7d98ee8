"""Where a served or deployed policy comes from: one registry, ``kind -> loader(path, device)``.

``vla serve checkpoint=<path>`` and ``vla deploy checkpoint=<path>`` accept any of:

- a ``vla train`` checkpoint or run directory (``checkpoint``: :func:`vla.policies.load_policy`);
- a lerobot ``pretrained_model`` folder (``lerobot``: :mod:`vla.interop.lerobot_policy`);
- a directory written by ``vla export`` (``exported``: :func:`vla.policies.export.load_exported_policy`).

The kind is detected from the files in the directory. The checkpoint and lerobot loaders are those
of ``vla eval`` (:data:`vla.evaluation.loaders.POLICY_LOADERS`), so every command loads a policy the
same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _load_exported(source: str | None, device: str, precision: str = "auto") -> Any:
    from vla.evaluation.loaders import only_auto_precision
    from vla.policies.export import load_exported_policy

    only_auto_precision("exported", precision)
    if device not in ("auto", "cpu"):
        raise ValueError(f"exported policies run on the CPU; device={device!r} is not supported")
    return load_exported_policy(str(source))


def _loaders() -> dict[str, Callable[[str | None, str, str], Any]]:
    from vla.evaluation.loaders import POLICY_LOADERS

    return {
        "checkpoint": POLICY_LOADERS["checkpoint"],
        "lerobot": POLICY_LOADERS["lerobot"],
        "exported": _load_exported,
    }


def _is_lerobot(path: Path) -> bool:
    from vla.interop.lerobot_policy import is_lerobot_checkpoint

    return is_lerobot_checkpoint(path)


def _is_exported(path: Path) -> bool:
    from vla.policies.export import is_export_dir

    return is_export_dir(path)


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


def load_deploy_policy(path: str | os.PathLike[str], device: str = "auto", precision: str = "auto") -> Any:
    """The policy stored at ``path`` (any kind above), ready for ``predict_chunks`` / ``predict_chunk``."""
    return _loaders()[policy_kind(path)](str(path), device, precision)
