"""Input checking at the policy boundary: every problem gets an error naming the field.

A policy is fed by simulators, robots and network clients; a missing camera, a transposed image, a
float image, a NaN in the state or a stale observation must stop the call with a message a user can
act on, not produce a wrong action. Images are never resized here: a resolution different from the
checkpoint's is an error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vla.features import INSTRUCTION_KEY, STATE_KEY

TIMESTAMP_KEY = "timestamp"


class ObservationError(ValueError):
    """An observation or batch the policy cannot use; ``field`` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"observation field {field!r}: {problem}")


class FeatureMismatchError(ValueError):
    """A checkpoint and a data source (store, environment) disagree on features or shapes."""


def check_batch(
    batch: Mapping[str, Any],
    camera_keys: Sequence[str],
    image_shape: tuple[int, int, int],
    state_dim: int,
    max_age_s: float | None = None,
    now: float | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Validate a batch with leading (B, T) and return (arrays, instructions).

    Images must be uint8 (B, T, H, W, 3) at exactly ``image_shape``; the state a real-valued
    (B, T, state_dim) array without NaN or infinity; ``instruction`` a list of B strings. An optional
    ``timestamp`` (B,) or (B, T) in ``time.time()`` seconds older than ``max_age_s`` is refused.
    """
    if not isinstance(batch, Mapping):
        raise ObservationError("<batch>", f"expected a dict of arrays, got {type(batch).__name__}")
    arrays: dict[str, np.ndarray] = {}
    lead: tuple[int, int] | None = None
    for key in (*camera_keys, STATE_KEY):
        if key not in batch:
            raise ObservationError(key, f"missing (the policy needs {sorted([*camera_keys, STATE_KEY])})")
        array = np.asarray(batch[key])
        expected = (*image_shape,) if key in camera_keys else (state_dim,)
        if array.ndim != 2 + len(expected) or tuple(array.shape[2:]) != expected:
            what = "image (B, T, H, W, 3)" if key in camera_keys else "state (B, T, D)"
            raise ObservationError(
                key, f"shape {array.shape}, expected {what} with per-frame shape {expected}"
            )
        if lead is None:
            lead = (array.shape[0], array.shape[1])
        elif tuple(array.shape[:2]) != lead:
            raise ObservationError(
                key, f"leading (B, T) = {array.shape[:2]} differs from the other fields' {lead}"
            )
        if key in camera_keys:
            if array.dtype != np.uint8:
                raise ObservationError(key, f"dtype {array.dtype}, expected uint8 images in [0, 255]")
        else:
            if array.dtype.kind not in "fiu":
                raise ObservationError(key, f"dtype {array.dtype} is not real-valued")
            array = array.astype(np.float32)
            if not np.isfinite(array).all():
                b, t, d = np.argwhere(~np.isfinite(array))[0]
                raise ObservationError(key, f"contains NaN or infinity (batch {b}, step {t}, dimension {d})")
        arrays[key] = array
    assert lead is not None
    if lead[0] == 0 or lead[1] == 0:
        raise ObservationError(STATE_KEY, f"empty batch: leading (B, T) = {lead}")
    instructions = _check_instructions(batch.get(INSTRUCTION_KEY), lead[0])
    if max_age_s is not None and TIMESTAMP_KEY in batch:
        check_age(batch[TIMESTAMP_KEY], max_age_s, now)
    return arrays, instructions


def _check_instructions(value: Any, batch_size: int) -> list[str]:
    if value is None:
        raise ObservationError(INSTRUCTION_KEY, f"missing (expected a list of {batch_size} strings)")
    if isinstance(value, str) and batch_size == 1:
        value = [value]
    if not isinstance(value, list | tuple) or len(value) != batch_size:
        raise ObservationError(INSTRUCTION_KEY, f"expected a list of {batch_size} strings, got {value!r:.80}")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ObservationError(INSTRUCTION_KEY, f"entry {i} is {type(text).__name__}, not str")
    return list(value)


def check_age(timestamp: Any, max_age_s: float, now: float | None = None) -> None:
    """Refuse observations whose ``timestamp`` (``time.time()`` seconds) is older than ``max_age_s``."""
    stamps = np.asarray(timestamp, dtype=np.float64)
    if not np.isfinite(stamps).all():
        raise ObservationError(TIMESTAMP_KEY, "contains NaN or infinity")
    now = time.time() if now is None else now
    # The newest frame of each observation decides: an older history frame is expected.
    newest = stamps.reshape(stamps.shape[0], -1).max(axis=1) if stamps.ndim > 1 else stamps.reshape(-1)
    age = now - float(newest.min())
    if age > max_age_s:
        raise ObservationError(
            TIMESTAMP_KEY, f"observation is {age:.3f} s old, older than max_age_s={max_age_s}"
        )


def check_observation_features(
    features: Mapping[str, Sequence[int]],
    camera_keys: Sequence[str],
    image_shape: Sequence[int],
    state_dim: int,
) -> None:
    """Check an environment's (or robot's) declared per-frame feature shapes against a policy."""
    expected = {key: tuple(image_shape) for key in camera_keys}
    expected[STATE_KEY] = (state_dim,)
    for key, shape in expected.items():
        if key not in features:
            raise FeatureMismatchError(
                f"the policy needs feature {key!r}, the source offers {sorted(features)}"
            )
        if tuple(features[key]) != shape:
            raise FeatureMismatchError(
                f"feature {key!r} has shape {tuple(features[key])}, the policy expects {shape}"
            )
