"""What an env config's environments observe and take, read from their declared spaces.

An environment is built, its observation and action spaces read (the same reading that gives a
recording its store schema, :func:`vla.envs.record.schema_for_env`) and closed: nothing is reset or
rendered, so no GL context exists in the calling process. Evaluation checks a policy against this
before any worker starts or any episode runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vla.envs import registry


def declared_features(
    env_cfg: Mapping[str, Any], task: str
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[str, ...] | None]]:
    """``(shapes, names)`` of the features ``task``'s environment declares (cameras, state, action).

    Shapes are per frame; names are the per-dimension names the environment lists (None if none).
    """
    from vla.envs.record import schema_for_env

    env = registry.make_env(env_cfg, task)
    try:
        schema = schema_for_env(env)
    finally:
        env.close()
    shapes = {key: spec.shape for key, spec in schema.features.items()}
    names = {key: spec.names for key, spec in schema.features.items()}
    return shapes, names
