"""Check an observation received over the network against the policy's spec before it reaches the model.

Every rule names the field it rejects (``ObservationError`` of ``vla.policies.checks``): a missing
camera, an image that is not uint8 (H, W, 3), a state of the wrong length, NaN values. Also turns a validated observation
into the (B, T, ...) batch ``Policy.predict_chunks`` takes, so several clients can share one forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vla.features import INSTRUCTION_KEY, STATE_KEY
from vla.policies.checks import ObservationError, check_batch


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A PolicySpec (a dataclass or any object) as plain msgpack-able data."""
    raw = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(vars(spec))
    return {k: _plain(v) for k, v in raw.items() if not k.startswith("_")}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def validate_observation(observation: Any, spec: Any) -> tuple[dict[str, Any], bool]:
    """The observation, checked, and whether it is a single frame (else a (T, ...) history).

    Wire-level rules here (a map of arrays plus the ``instruction`` string, no NaN anywhere, a history
    no longer than ``spec.n_obs_steps``); the policy's own rules (cameras, uint8 (H, W, 3) images at the
    checkpoint's resolution, state length) through ``vla.policies.checks.check_batch`` when the spec
    declares ``image_shape`` and ``state_dim``.
    """
    if not isinstance(observation, Mapping):
        raise ObservationError("observation", f"must be a map, got {type(observation).__name__}")
    if not isinstance(observation.get(INSTRUCTION_KEY), str):
        raise ObservationError(INSTRUCTION_KEY, "missing or not a string")
    for key, value in observation.items():
        if key == INSTRUCTION_KEY:
            continue
        if not isinstance(value, np.ndarray):
            raise ObservationError(key, f"must be an array, got {type(value).__name__}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ObservationError(key, "contains NaN or infinity")
    camera_keys = tuple(getattr(spec, "camera_keys", ()) or ())
    single_frame = True
    if camera_keys and camera_keys[0] in observation:
        single_frame = observation[camera_keys[0]].ndim == 3
    elif STATE_KEY in observation:
        single_frame = observation[STATE_KEY].ndim == 1
    n_obs_steps = int(getattr(spec, "n_obs_steps", 1) or 1)
    if not single_frame:
        steps = len(next(iter(observation[k] for k in (*camera_keys, STATE_KEY) if k in observation)))
        if not 1 <= steps <= n_obs_steps:
            raise ObservationError(
                "observation", f"history of {steps} frames; the policy takes 1..{n_obs_steps}"
            )
    image_shape, state_dim = getattr(spec, "image_shape", None), getattr(spec, "state_dim", None)
    if image_shape is not None and state_dim is not None:
        check_batch(stack_batch([observation], single_frame), camera_keys, tuple(image_shape), int(state_dim))
    return dict(observation), single_frame


def batch_signature(observation: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    """Observations with equal signatures can be stacked into one batch."""
    return tuple(
        sorted((k, v.shape, v.dtype.str) for k, v in observation.items() if isinstance(v, np.ndarray))
    )


def stack_batch(observations: Sequence[Mapping[str, Any]], single_frame: bool) -> dict[str, Any]:
    """Validated observations of one signature -> the (B, T, ...) batch of ``Policy.predict_chunks``."""
    batch: dict[str, Any] = {INSTRUCTION_KEY: [o[INSTRUCTION_KEY] for o in observations]}
    for key, value in observations[0].items():
        if isinstance(value, np.ndarray):
            stacked = np.stack([o[key] for o in observations])
            batch[key] = stacked[:, None] if single_frame else stacked
    return batch
