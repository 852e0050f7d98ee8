"""Check an observation received over the network against the policy's spec before it reaches the model.

Every rule names the field it rejects (``ObservationError`` of ``vla.policy_spec``): a missing
camera, an image that is not uint8 (H, W, 3), a state of the wrong length, NaN values. Also turns a validated observation
into the (B, T, ...) batch ``Policy.predict_chunks`` takes, so several clients can share one forward.

Sizes are checked first, before any pass over the data: the instruction's length, the fields (an
array the policy does not read is refused, not carried along) and each array's shape and dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vla.features import INSTRUCTION_KEY, STATE_KEY
from vla.policy_spec import TIMESTAMP_KEY, ObservationError, check_batch

# The longest instruction accepted, in characters: far beyond any real one (the tokenizer keeps the
# first max_text_len tokens anyway), short enough that no request can hold the server with text.
MAX_INSTRUCTION_CHARS = 8192


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
    checkpoint's resolution, state length) through ``vla.policy_spec.check_batch`` when the spec
    declares ``image_shape`` and ``state_dim``.
    """
    if not isinstance(observation, Mapping):
        raise ObservationError("observation", f"must be a map, got {type(observation).__name__}")
    instruction = observation.get(INSTRUCTION_KEY)
    if not isinstance(instruction, str):
        raise ObservationError(INSTRUCTION_KEY, "missing or not a string")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ObservationError(
            INSTRUCTION_KEY, f"{len(instruction)} characters, more than the {MAX_INSTRUCTION_CHARS} accepted"
        )
    camera_keys = tuple(getattr(spec, "camera_keys", ()) or ())
    read = {*camera_keys, STATE_KEY, TIMESTAMP_KEY, INSTRUCTION_KEY}
    for key, value in observation.items():
        if camera_keys and key not in read:  # sizes before work: no pass over what nobody reads
            raise ObservationError(
                key, f"not read by the policy (it reads {sorted(read - {INSTRUCTION_KEY})})"
            )
        if key != INSTRUCTION_KEY and not isinstance(value, np.ndarray):
            raise ObservationError(key, f"must be an array, got {type(value).__name__}")
    _check_shapes(observation, spec, camera_keys)
    for key, value in observation.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ObservationError(key, "contains NaN or infinity")
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


def _check_shapes(observation: Mapping[str, Any], spec: Any, camera_keys: tuple[str, ...]) -> None:
    """Each array's trailing (per-frame) shape and dtype against the spec, before any pass over data."""
    image_shape, state_dim = getattr(spec, "image_shape", None), getattr(spec, "state_dim", None)
    expected: dict[str, tuple[int, ...]] = {}
    if image_shape is not None:
        expected.update({key: tuple(image_shape) for key in camera_keys})
    if state_dim is not None:
        expected[STATE_KEY] = (int(state_dim),)
    for key, frame in expected.items():
        value = observation.get(key)
        if not isinstance(value, np.ndarray):
            continue  # missing: check_batch names it
        if value.ndim not in (len(frame), len(frame) + 1) or tuple(value.shape[-len(frame) :]) != frame:
            raise ObservationError(key, f"shape {value.shape}, expected {frame} per frame")
        if key in camera_keys and value.dtype != np.uint8:
            raise ObservationError(key, f"dtype {value.dtype}, expected uint8 images in [0, 255]")


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
