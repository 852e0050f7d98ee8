"""Feature normalization with statistics that travel with the checkpoint.

One rule per feature kind, so training and inference can never disagree:

- ``state`` features: ``(x - mean) / std`` (std floored at ``MIN_SCALE`` so a constant joint does
  not blow up);
- ``action`` features: the 1st..99th percentile range mapped onto [-1, 1],
  ``2 * (x - q01) / (q99 - q01) - 1`` (range floored at ``MIN_SCALE``). This is what the binning
  action tokenizer expects; values beyond the percentiles land slightly outside [-1, 1] and are
  *not* clipped here (un-normalization stays the exact inverse); the tokenizer clips.
- ``image`` features: uint8 divided by 255 into [0, 1]; they need no statistics.

A feature that should be normalized but has no statistics is an error, never a silent pass-through.
Statistics are stored as plain JSON (lists of floats) inside checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# Smallest scale (std or half percentile range) a feature may be divided by.
MIN_SCALE = 1e-3
# Tolerance when two statistics are compared (relative, absolute).
STATS_RTOL, STATS_ATOL = 1e-4, 1e-6

Array = np.ndarray | torch.Tensor


class NormalizationError(ValueError):
    """Missing, malformed or mismatching normalization statistics; the message names the feature."""


def _mean_std(stats: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) with ``normalized = (x - offset) / scale``."""
    return stats["mean"], np.maximum(stats["std"], MIN_SCALE)


def _quantile(stats: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    center = (stats["q99"] + stats["q01"]) / 2
    half_range = np.maximum((stats["q99"] - stats["q01"]) / 2, MIN_SCALE)
    return center, half_range


def _min_max(stats: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    center = (stats["max"] + stats["min"]) / 2
    half_range = np.maximum((stats["max"] - stats["min"]) / 2, MIN_SCALE)
    return center, half_range


# mode -> (statistics it reads, function giving (offset, scale)).
MODES: dict[
    str, tuple[tuple[str, ...], Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]]
] = {
    "mean_std": (("mean", "std"), _mean_std),
    "quantile": (("q01", "q99"), _quantile),
    "min_max": (("min", "max"), _min_max),
}
# Default mode for each feature kind (see vla.data.Schema kinds); images are scaled, not normalized.
DEFAULT_MODE_BY_KIND: dict[str, str] = {"state": "mean_std", "action": "quantile"}
IMAGE_SCALE = 255.0


def _as_float_arrays(feature: str, stats: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in stats]
    if missing:
        raise NormalizationError(f"statistics of feature {feature!r} lack {missing} (have {sorted(stats)})")
    arrays = {k: np.asarray(stats[k], dtype=np.float64).reshape(-1) for k in keys}
    for k, value in arrays.items():
        if not np.isfinite(value).all():
            raise NormalizationError(f"statistic {k!r} of feature {feature!r} contains NaN or infinity")
    return arrays


@dataclass
class Normalizer:
    """Normalizes and un-normalizes named features with fixed statistics.

    ``modes`` maps each normalized feature to a key of :data:`MODES`; ``stats`` holds, per feature,
    the statistics that mode reads (1-D float arrays of the feature's last dimension).
    """

    modes: dict[str, str]
    stats: dict[str, dict[str, np.ndarray]]
    _affine: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for feature, mode in self.modes.items():
            if mode not in MODES:
                raise NormalizationError(
                    f"unknown normalization mode {mode!r} for {feature!r}; choose {sorted(MODES)}"
                )
            if feature not in self.stats:
                raise NormalizationError(f"feature {feature!r} has no normalization statistics")
            keys, affine = MODES[mode]
            self.stats[feature] = _as_float_arrays(feature, self.stats[feature], keys)
            offset, scale = affine(self.stats[feature])
            self._affine[feature] = (offset.astype(np.float32), scale.astype(np.float32))

    @classmethod
    def from_store_stats(cls, stats: Mapping[str, Mapping[str, Any]], modes: Mapping[str, str]) -> Normalizer:
        """Keep only the statistics each feature's mode needs; a feature absent from ``stats`` is an error."""
        missing = [f for f in modes if f not in stats]
        if missing:
            raise NormalizationError(
                f"no statistics for features {missing}; the store has stats for {sorted(stats)}"
            )
        picked = {f: _as_float_arrays(f, stats[f], MODES[m][0]) for f, m in modes.items()}
        return cls(dict(modes), picked)

    def dim(self, feature: str) -> int:
        """The size of the last dimension ``feature`` was normalized over."""
        return int(self._affine[self._known(feature)][0].shape[0])

    def _known(self, feature: str) -> str:
        if feature not in self._affine:
            raise NormalizationError(
                f"feature {feature!r} has no normalization statistics (have {sorted(self._affine)})"
            )
        return feature

    def _params(self, feature: str, x: Array) -> tuple[Array, Array]:
        offset, scale = self._affine[self._known(feature)]
        if x.shape[-1] != offset.shape[0]:
            raise NormalizationError(
                f"feature {feature!r} has last dimension {x.shape[-1]}, its statistics have {offset.shape[0]}"
            )
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(offset, device=x.device, dtype=x.dtype),
                torch.as_tensor(scale, device=x.device, dtype=x.dtype),
            )
        return offset, scale

    def normalize(self, feature: str, x: Array) -> Array:
        """Map raw values of ``feature`` (last dimension = feature size) to normalized ones."""
        offset, scale = self._params(feature, x)
        return (x - offset) / scale

    def unnormalize(self, feature: str, x: Array) -> Array:
        """Exact inverse of :meth:`normalize`."""
        offset, scale = self._params(feature, x)
        return x * scale + offset

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (lists of floats)."""
        return {
            "modes": dict(self.modes),
            "stats": {f: {k: v.tolist() for k, v in s.items()} for f, s in self.stats.items()},
            "min_scale": MIN_SCALE,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_dict`; malformed input raises :class:`NormalizationError`."""
        try:
            return cls(dict(data["modes"]), {f: dict(s) for f, s in data["stats"].items()})
        except (KeyError, TypeError, AttributeError) as exc:
            raise NormalizationError(f"malformed normalization data: {exc!r}") from exc

    def check_matches(self, stats: Mapping[str, Mapping[str, Any]], source: str = "the data") -> None:
        """Raise if ``stats`` (e.g. a store's) disagree with this normalizer's for any normalized feature."""
        for feature, mode in self.modes.items():
            if feature not in stats:
                raise NormalizationError(f"{source} has no statistics for feature {feature!r}")
            theirs = _as_float_arrays(feature, stats[feature], MODES[mode][0])
            for key, ours in self.stats[feature].items():
                if theirs[key].shape != ours.shape:
                    raise NormalizationError(
                        f"feature {feature!r}: statistic {key!r} has shape {theirs[key].shape} in {source}, "
                        f"{ours.shape} in the checkpoint"
                    )
                if not np.allclose(theirs[key], ours, rtol=STATS_RTOL, atol=STATS_ATOL):
                    worst = int(np.argmax(np.abs(theirs[key] - ours)))
                    raise NormalizationError(
                        f"feature {feature!r}: statistic {key!r} differs between {source} and the checkpoint "
                        f"(dimension {worst}: {theirs[key][worst]:.6g} vs {ours[worst]:.6g})"
                    )


def scale_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (float input is refused: it would be scaled twice or not at all)."""
    if images.dtype != torch.uint8:
        raise NormalizationError(f"images must be uint8 before scaling, got {images.dtype}")
    return images.float().div_(IMAGE_SCALE)
