"""Schema of a trajectory store: one :class:`FeatureSpec` per feature, and frame checking.

A feature's kind says how it is stored and read: ``image`` (uint8 (H, W, 3), named
``observation.images.<camera>``), ``state``, ``action`` or ``other``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla.data.errors import FrameError, SchemaError
from vla.features import INSTRUCTION_KEY, is_image_key

KINDS = ("image", "state", "action", "other")
# The largest frame of one feature a store holds. Sizes are computed with Python integers: numpy's
# int64 product of an absurd shape wraps around (to "-2 bytes", or 0 and a division by zero).
MAX_FRAME_BYTES = 1 << 30


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: numpy dtype name, per-frame shape, kind, and optional per-dimension names."""

    dtype: str
    shape: tuple[int, ...]
    kind: str = "other"
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.kind not in KINDS:
            raise SchemaError(f"kind {self.kind!r} is not one of {KINDS}")
        if any(s <= 0 for s in self.shape):
            raise SchemaError(f"shape {self.shape} has a non-positive dimension")
        if self.kind == "image" and (self.dtype != "uint8" or len(self.shape) != 3 or self.shape[2] != 3):
            raise SchemaError(f"an image feature must be uint8 (H, W, 3), got {self.dtype} {self.shape}")
        if self.names is not None and self.kind != "image":
            expected = self.shape[-1] if self.shape else 1
            if len(self.names) != expected:
                raise SchemaError(f"{len(self.names)} names for a last dimension of {expected}")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame of this feature (exact, however large the shape)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "kind": self.kind,
            "names": None if self.names is None else list(self.names),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FeatureSpec:
        return cls(doc["dtype"], tuple(doc["shape"]), doc["kind"], doc.get("names"))


@dataclass(frozen=True)
class Schema:
    """The features of a store, by name (LeRobot's names: see :mod:`vla.features`)."""

    features: dict[str, FeatureSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            raise SchemaError("a schema needs at least one feature")
        for name, spec in self.features.items():
            if not isinstance(spec, FeatureSpec):
                raise SchemaError(f"feature {name!r}: expected a FeatureSpec, got {type(spec).__name__}")
            if not name or "/" in name or name == INSTRUCTION_KEY:
                raise SchemaError(f"feature name {name!r} is not allowed (empty, contains '/' or reserved)")
            if spec.frame_bytes > MAX_FRAME_BYTES:
                raise SchemaError(
                    f"feature {name!r}: shape {spec.shape} of {spec.dtype} is {spec.frame_bytes} bytes per "
                    f"frame, more than the {MAX_FRAME_BYTES} a store holds"
                )
            if (spec.kind == "image") != is_image_key(name):
                raise SchemaError(
                    f"feature {name!r}: image features, and only they, are named 'observation.images.<camera>'"
                )

    def to_json(self) -> dict[str, Any]:
        return {name: spec.to_json() for name, spec in self.features.items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Schema:
        return cls({name: FeatureSpec.from_json(spec) for name, spec in doc.items()})


def _check_value(name: str, spec: FeatureSpec, value: Any, frame_index: int) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != spec.shape:
        raise FrameError(name, frame_index, f"shape {array.shape} does not match the schema's {spec.shape}")
    target = np.dtype(spec.dtype)
    if target.kind == "f":
        # Any real number converts to a float feature; Python floats arrive as float64.
        if array.dtype.kind not in "fiub":
            raise FrameError(name, frame_index, f"dtype {array.dtype} is not numeric (schema: {target})")
        array = array.astype(target, copy=False)
        if not np.isfinite(array).all():
            raise FrameError(name, frame_index, "contains NaN or infinite values")
        return array
    if not np.can_cast(array.dtype, target, casting="safe"):
        raise FrameError(name, frame_index, f"dtype {array.dtype} does not match the schema's {target}")
    return array.astype(target, copy=False)


def check_frame(
    schema: Schema, frame: Mapping[str, Any], frame_index: int, instruction: str | None = None
) -> dict[str, np.ndarray]:
    """Check one frame against ``schema``; returns its values converted to the stored dtypes.

    Raises :class:`FrameError` naming the feature and ``frame_index`` for a missing or unknown
    feature, a wrong shape or dtype, or a NaN. An ``instruction`` entry (as environments put in
    observations) is accepted when it equals the episode's instruction.
    """
    if not isinstance(frame, Mapping):
        raise FrameError(None, frame_index, f"a frame is a dict of features, got {type(frame).__name__}")
    for key in frame:
        if key == INSTRUCTION_KEY:
            if instruction is not None and frame[key] != instruction:
                raise FrameError(key, frame_index, "differs from the episode's instruction")
        elif key not in schema.features:
            raise FrameError(key, frame_index, f"unknown feature (schema: {sorted(schema.features)})")
    checked = {}
    for name, spec in schema.features.items():
        if name not in frame:
            raise FrameError(name, frame_index, "missing")
        checked[name] = _check_value(name, spec, frame[name], frame_index)
    return checked
