"""What a policy consumes and produces (:class:`PolicySpec`), and the checks at its boundary.

A policy is fed by simulators, robots and network clients; a missing camera, a transposed image, a
float image, a NaN in the state or a stale observation must stop the call with a message a user can
act on, not produce a wrong action (:func:`check_batch`). Images are never resized here: a
resolution different from the checkpoint's is an error. Before anything runs, a policy is checked
against the environment, robot or store that will feed it (:func:`check_policy_features`).

Training, the policy runtime, evaluation, deployment and the lerobot adapter all use these, so this
module sits below them (docs/ARCHITECTURE.md) and imports numpy only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.features import ACTION_KEY, INSTRUCTION_KEY, STATE_KEY

TIMESTAMP_KEY = "timestamp"
# Actions per chunk for a policy whose spec names neither replan_every nor a chunk size
# (replan_interval), and ChunkExecutor's default.
DEFAULT_REPLAN_EVERY = 8


class ObservationError(ValueError):
    """An observation or batch the policy cannot use; ``field`` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"observation field {field!r}: {problem}")


class FeatureMismatchError(ValueError):
    """A checkpoint and a data source (store, environment) disagree on features or shapes."""


@dataclass(frozen=True)
class PolicySpec:
    """What a policy consumes and produces (saved as ``policy.json`` in the checkpoint)."""

    camera_keys: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, 3), uint8
    state_dim: int
    action_dim: int
    n_obs_steps: int
    chunk_size: int
    fps: float | None = None
    state_names: tuple[str, ...] | None = None
    action_names: tuple[str, ...] | None = None
    state_indices: tuple[int, ...] | None = None  # the state entries the model reads (None: all)
    # Actions executed from each chunk before the next is predicted (None: the whole chunk). Part of
    # the recipe, like lerobot's n_action_steps: the same weights succeed far more often when they
    # replan sooner (README, "What moved success").
    replan_every: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySpec:
        """From ``policy.json`` (extra keys such as ``features`` are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("camera_keys", "image_shape", "state_names", "action_names", "state_indices"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def check_features(
        self, features: Mapping[str, Any], names: Mapping[str, Any] | None = None, source: str = "the source"
    ) -> None:
        """Raise :class:`FeatureMismatchError` if a source's per-frame shapes (``{feature: shape}``,
        ``action`` included) or names do not fit this policy (:func:`check_policy_features`)."""
        check_policy_features(self, features, names, source)


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


def spec_field(spec: Any, name: str, default: Any = None) -> Any:
    """A field of a policy spec (a ``PolicySpec``, any object, or the dict a policy server reports);
    ``default`` when the spec lacks it or holds None."""
    value = spec.get(name) if isinstance(spec, Mapping) else getattr(spec, name, None)
    return default if value is None else value


def replan_interval(spec: Any, fallback: int = DEFAULT_REPLAN_EVERY) -> int:
    """Actions to execute from each chunk of a policy with ``spec`` before asking for the next: the
    policy's own ``replan_every``, else its whole chunk, else ``fallback`` (a spec without either)."""
    chunk_size = spec_field(spec, "chunk_size")
    value = spec_field(spec, "replan_every", chunk_size)
    value = fallback if value is None else int(value)
    if chunk_size is not None:
        value = min(value, int(chunk_size))  # a chunk cannot give more actions than it holds
    return max(1, value)


def _shape_text(shape: Sequence[int] | None, names: Sequence[str] | None) -> str:
    if shape is None:
        return "nothing"
    listed = f" [{', '.join(names)}]" if names else ""
    return f"shape {tuple(shape)}{listed}"


def check_policy_features(
    spec: Any,
    features: Mapping[str, Sequence[int]],
    names: Mapping[str, Sequence[str] | None] | None = None,
    source: str = "the source",
) -> None:
    """Raise one :class:`FeatureMismatchError` listing every way ``spec`` and a source disagree.

    ``features`` maps each feature the source (an environment, a robot) offers or takes to its
    per-frame shape: its cameras, ``observation.state`` and ``action``; ``names`` maps features to
    their per-dimension names where the source declares them. Checked: every camera the policy
    uses exists at the policy's image shape, and the state and the action have the policy's
    dimension and, when both sides name them, the same names in the same order. A feature the
    source does not declare at all (``action`` from a source that only observes) is not checked.
    ``spec`` is a :class:`PolicySpec`, any object with its fields, or the
    ``spec`` dict a policy server reports; fields it lacks are not checked.
    """
    names = names or {}
    problems: list[str] = []

    def compare(key: str, wanted: tuple[int, ...], wanted_names: Sequence[str] | None, verb: str) -> None:
        offered = features.get(key)
        theirs = names.get(key)
        if offered is None:
            problems.append(
                f"{key}: the policy {verb} {_shape_text(wanted, wanted_names)}, {source} has none"
            )
        elif tuple(offered) != wanted:
            problems.append(
                f"{key}: the policy {verb} {_shape_text(wanted, wanted_names)}, "
                f"{source} has {_shape_text(offered, theirs)}"
            )
        elif wanted_names and theirs and tuple(wanted_names) != tuple(theirs):
            problems.append(
                f"{key}: the policy {verb} [{', '.join(wanted_names)}], {source} has [{', '.join(theirs)}]"
            )

    image_shape = spec_field(spec, "image_shape")
    for key in spec_field(spec, "camera_keys") or ():
        if image_shape is not None:
            compare(key, tuple(image_shape), None, "reads")
        elif key not in features:
            problems.append(
                f"{key}: the policy reads this camera, {source} has none (cameras: {sorted(features)})"
            )
    state_dim = spec_field(spec, "state_dim")
    if state_dim:
        compare(STATE_KEY, (int(state_dim),), spec_field(spec, "state_names"), "reads")
    action_dim = spec_field(spec, "action_dim")
    if action_dim and ACTION_KEY in features:
        compare(ACTION_KEY, (int(action_dim),), spec_field(spec, "action_names"), "produces")
    if problems:
        raise FeatureMismatchError(f"the policy does not fit {source}: " + "; ".join(problems))
