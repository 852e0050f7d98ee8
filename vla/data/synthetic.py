"""Synthetic episodes that look like camera footage (for ``vla data demo``, tests and benchmarks).

Images are smooth colour gradients with a moving disc and sensor noise, so they compress like real
footage (not like constant frames); state and action follow smooth random trajectories.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vla.data.schema import FeatureSpec, Schema
from vla.data.store import TrajectoryStore
from vla.features import ACTION_KEY, STATE_KEY, camera_key

INSTRUCTIONS = ("pick up the red cube", "push the blue block to the goal", "open the top drawer")


def synthetic_schema(
    cameras: Sequence[str] = ("front", "wrist"), image_size: int = 96, state_dim: int = 8, action_dim: int = 7
) -> Schema:
    """A schema with ``cameras`` (square RGB images), a state and an action vector."""
    features = {camera_key(c): FeatureSpec("uint8", (image_size, image_size, 3), "image") for c in cameras}
    features[STATE_KEY] = FeatureSpec(
        "float32", (state_dim,), "state", tuple(f"q{i}" for i in range(state_dim))
    )
    features[ACTION_KEY] = FeatureSpec(
        "float32", (action_dim,), "action", tuple(f"a{i}" for i in range(action_dim))
    )
    return Schema(features)


def _camera_frames(rng: np.random.Generator, length: int, shape: tuple[int, ...]) -> np.ndarray:
    height, width, _ = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    direction = rng.uniform(-1, 1, 2)
    ramp = (direction[0] * xx + direction[1] * yy)[..., None]
    base = rng.uniform(40, 200, 3) + 50 * ramp * rng.uniform(-1, 1, 3)  # (H, W, 3)
    t = np.arange(length)[:, None, None]
    phase, speed = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.02, 0.08, 2)
    cx = 0.5 + 0.3 * np.sin(speed[0] * t + phase[0])
    cy = 0.5 + 0.3 * np.cos(speed[1] * t + phase[1])
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < rng.uniform(0.01, 0.03)  # (T, H, W)
    frames = np.broadcast_to(base, (length, *shape)).copy()
    frames[disc] = rng.uniform(0, 255, 3)
    frames += rng.normal(0, 3, frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _smooth(rng: np.random.Generator, length: int, dim: int) -> np.ndarray:
    t = np.arange(length)[:, None]
    freq, phase, amp = rng.uniform(0.01, 0.1, dim), rng.uniform(0, 2 * np.pi, dim), rng.uniform(0.2, 1.0, dim)
    return (amp * np.sin(freq * t + phase)).astype(np.float32)


def synthetic_episode(rng: np.random.Generator, schema: Schema, length: int) -> Iterator[dict[str, Any]]:
    """The frames of one synthetic episode of ``length`` steps, as writer-ready dicts."""
    columns: dict[str, np.ndarray] = {}
    for name, spec in schema.features.items():
        if spec.kind == "image":
            columns[name] = _camera_frames(rng, length, spec.shape)
        else:
            flat = int(np.prod(spec.shape))
            columns[name] = _smooth(rng, length, flat).reshape(length, *spec.shape).astype(spec.dtype)
    for i in range(length):
        yield {name: column[i] for name, column in columns.items()}


def write_synthetic_store(
    path: str | os.PathLike[str],
    num_episodes: int,
    episode_length: int | tuple[int, int] = 100,
    schema: Schema | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> TrajectoryStore:
    """Create a store of ``num_episodes`` synthetic episodes; returned open for append.

    ``episode_length`` is a fixed length or a (low, high) range drawn per episode.
    """
    schema = schema or synthetic_schema()
    rng = np.random.default_rng(seed)
    store = TrajectoryStore.create(path, schema, fps=10.0, robot_type="synthetic", overwrite=overwrite)
    with store.writer() as writer:
        for episode in range(num_episodes):
            if isinstance(episode_length, tuple):
                length = int(rng.integers(episode_length[0], episode_length[1] + 1))
            else:
                length = episode_length
            writer.start_episode(INSTRUCTIONS[episode % len(INSTRUCTIONS)], env_id="synthetic", seed=episode)
            for frame in synthetic_episode(rng, schema, length):
                writer.add_frame(frame)
            writer.commit_episode(success=bool(rng.random() < 0.8))
    return store
