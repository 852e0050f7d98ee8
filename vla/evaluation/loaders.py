"""Where evaluated policies come from: a registry of loaders, ``kind -> (source, device, precision) -> policy``.

Anything with ``spec`` (exposing ``n_obs_steps``) and a stateless ``predict_chunks(batch) -> (B, H, A)``
can be evaluated. Register another kind with ``POLICY_LOADERS["name"] = loader``; a loader is called
as ``loader(source, device, precision)`` and refuses a ``precision`` other than ``auto`` it cannot honour.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

PolicyLoader = Callable[[str | None, str, str], Any]


def only_auto_precision(kind: str, precision: str) -> None:
    """Raise ``ValueError`` for a precision choice a policy of ``kind`` has no way to honour."""
    if precision != "auto":
        raise ValueError(f"precision={precision!r} applies to vla checkpoints; a {kind} policy runs as it is")


def _load_checkpoint(source: str | None, device: str, precision: str = "auto") -> Any:
    if not source:
        raise ValueError("policy=checkpoint needs checkpoint=<dir>")
    from vla.policies import load_policy

    return load_policy(source, device=device, precision=precision)


def _load_scripted(source: str | None, device: str, precision: str = "auto") -> Any:
    from vla.evaluation.scripted import ScriptedPolicy

    only_auto_precision("scripted", precision)
    return ScriptedPolicy()


# The lerobot adapter lives in vla.interop (it needs the optional lerobot extra); this hook calls
# ``load_lerobot_policy(path_or_repo, device)`` there once that adapter exists.
LEROBOT_ADAPTER = ("vla.interop.lerobot_policy", "load_lerobot_policy")


def _load_lerobot(source: str | None, device: str, precision: str = "auto") -> Any:
    only_auto_precision("lerobot", precision)
    module_name, function_name = LEROBOT_ADAPTER
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(
            f"policy=lerobot needs {module_name}.{function_name}(checkpoint, device) (and `pip install vla[lerobot]`): {exc}"
        ) from exc
    if not source:
        raise ValueError("policy=lerobot needs checkpoint=<dir or hub id of a lerobot policy>")
    return function(source, device)


POLICY_LOADERS: dict[str, PolicyLoader] = {
    "checkpoint": _load_checkpoint,
    "scripted": _load_scripted,
    "lerobot": _load_lerobot,
}


def load_eval_policy(
    kind: str, source: str | None = None, device: str = "auto", precision: str = "auto"
) -> Any:
    """The policy of ``kind`` (``checkpoint``, ``scripted``, ``lerobot``, ...) from ``source``."""
    if kind not in POLICY_LOADERS:
        raise ValueError(f"unknown policy kind {kind!r}; known: {sorted(POLICY_LOADERS)}")
    return POLICY_LOADERS[kind](source, device, precision)
