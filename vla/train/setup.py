"""Everything a run derives from the data before the first step: features, statistics, tokenizers,
the model config and the documents saved in every checkpoint.

A fresh run computes them from the store; a resumed run reads them back from its checkpoint and
checks that the store still matches (features, shapes and statistics), naming any difference.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.features import ACTION_KEY, STATE_KEY, camera_key, camera_name
from vla.normalization import DEFAULT_MODE_BY_KIND, NormalizationError, Normalizer
from vla.policy_spec import FeatureMismatchError

log = logging.getLogger(__name__)


@dataclass
class DataFeatures:
    """What the policy consumes and produces, as read from the store's schema."""

    camera_keys: tuple[str, ...]
    image_shape: tuple[int, int, int]
    state_dim: int
    action_dim: int
    state_names: list[str] | None
    action_names: list[str] | None
    fps: float

    def shapes(self) -> dict[str, list[int]]:
        """Per-frame shape of every feature the policy uses."""
        shapes = {key: list(self.image_shape) for key in self.camera_keys}
        shapes.update({STATE_KEY: [self.state_dim], ACTION_KEY: [self.action_dim]})
        return shapes


def read_features(store: Any, cameras: list[str] | None) -> DataFeatures:
    """Features from the store schema; ``cameras`` (names) selects and orders cameras (None: all)."""
    schema = store.schema.features
    available = [camera_name(k) for k, spec in schema.items() if spec.kind == "image"]
    chosen = list(cameras) if cameras else available
    missing = [c for c in chosen if c not in available]
    if missing:
        raise FeatureMismatchError(f"the policy wants cameras {missing}, the store has only {available}")
    if not chosen:
        raise FeatureMismatchError("the store has no camera (image) features")
    for key in (STATE_KEY, ACTION_KEY):
        if key not in schema:
            raise FeatureMismatchError(f"the store has no {key!r} feature (features: {sorted(schema)})")
    shapes = {tuple(schema[camera_key(c)].shape) for c in chosen}
    if len(shapes) != 1:
        raise FeatureMismatchError(f"cameras {chosen} have different image shapes {sorted(shapes)}")
    state, action = schema[STATE_KEY], schema[ACTION_KEY]
    return DataFeatures(
        camera_keys=tuple(camera_key(c) for c in chosen),
        image_shape=shapes.pop(),  # type: ignore[arg-type]
        state_dim=int(state.shape[-1]),
        action_dim=int(action.shape[-1]),
        state_names=None if state.names is None else list(state.names),
        action_names=None if action.names is None else list(action.names),
        fps=float(store.fps),
    )


def check_same_features(saved: Mapping[str, Any], features: DataFeatures, source: str) -> None:
    """Raise naming the first feature whose presence or shape differs from a checkpoint's ``policy.json``."""
    theirs = features.shapes()
    ours = {k: list(v) for k, v in saved["features"].items()}
    for key in sorted(set(ours) | set(theirs)):
        if key not in theirs:
            raise FeatureMismatchError(f"feature {key!r} is used by the checkpoint but absent from {source}")
        if key not in ours:
            raise FeatureMismatchError(f"feature {key!r} of {source} is not used by the checkpoint")
        if ours[key] != theirs[key]:
            raise FeatureMismatchError(
                f"feature {key!r} has shape {theirs[key]} in {source}, {ours[key]} in the checkpoint"
            )


def store_stats(store: Any) -> dict[str, Any]:
    """The store's saved statistics; computed in memory when absent or stale (run `vla data stats`
    once to save them in the store)."""
    stats = store.stats
    if not stats or not store.stats_are_current():
        log.warning("store %s has no current statistics; computing them (not saved)", store.path)
        stats = store.compute_stats(write=False)
    return stats


def build_normalizer(stats: Mapping[str, Any]) -> Normalizer:
    """State: mean/std; action: q01..q99 -> [-1, 1] (see :mod:`vla.normalization`)."""
    modes = {STATE_KEY: DEFAULT_MODE_BY_KIND["state"], ACTION_KEY: DEFAULT_MODE_BY_KIND["action"]}
    try:
        return Normalizer.from_store_stats(stats, modes)
    except NormalizationError as exc:
        raise NormalizationError(f"{exc} (run `vla data stats` on the store)") from exc


def action_windows(episode_actions: list[np.ndarray], horizon: int, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` action chunks (N, H, A) starting at random frames; past an episode's end the
    last action repeats, as the store's window sampler pads."""
    starts = [(e, t) for e, actions in enumerate(episode_actions) for t in range(len(actions))]
    rng = np.random.default_rng([seed, 7])
    picked = rng.permutation(len(starts))[:limit]
    chunks = []
    for index in sorted(picked):
        e, t = starts[index]
        actions = episode_actions[e]
        rows = np.minimum(np.arange(t, t + horizon), len(actions) - 1)
        chunks.append(actions[rows])
    return np.stack(chunks).astype(np.float32)


def model_config_dict(
    model_section: Mapping[str, Any],
    features: DataFeatures,
    text_vocab_size: int,
    action_vocab_size: int,
    max_action_tokens: int,
    config_fields: set[str],
    state_indices: list[int] | None,
) -> dict[str, Any]:
    """The model section completed with what the data decides; a contradiction is an error.
    ``state_indices``: the state entries the model reads (:func:`vla.features.kept_state_indices`)."""
    values = dict(model_section)
    unknown = sorted(set(values) - config_fields)
    if unknown:
        raise ValueError(f"unknown policy model settings {unknown}; known: {sorted(config_fields)}")
    height, width, _ = features.image_shape
    if height != width:
        raise FeatureMismatchError(f"the model takes square images; the store's are {height}x{width}")
    derived: dict[str, Any] = {
        "cameras": [camera_name(k) for k in features.camera_keys],
        "image_size": height,
        "state_dim": features.state_dim if state_indices is None else len(state_indices),
        "action_dim": features.action_dim,
        "text_vocab_size": text_vocab_size,
        "action_vocab_size": action_vocab_size,
        "max_action_tokens": max_action_tokens,
    }
    for key, value in derived.items():
        given = values.get(key)
        if isinstance(given, list | tuple):
            given = list(given)
        if key in ("cameras", "image_size", "state_dim", "action_dim") and given not in (None, value):
            # state_dim counts the entries the model reads (after state_exclude)
            raise FeatureMismatchError(
                f"policy model.{key}={given} but the data gives {value} (images are never resized)"
            )
        values[key] = value
    return values


def dataclass_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
