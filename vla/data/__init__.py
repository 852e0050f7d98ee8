"""Zarr v3 trajectory store: episodes of images, state and actions for training VLA policies.

Writing::

    store = TrajectoryStore.create(path, schema, fps=10, robot_type="sim")
    with store.writer() as w:
        w.start_episode("pick up the cube", env_id="pick", seed=0)
        w.add_frame({"observation.images.front": img, "observation.state": q, "action": a})
        w.commit_episode(success=True)

Training::

    train, val = split_episodes(store.num_episodes, 0.1, seed=0)
    dataset = TrajectoryDataset(path, WindowSpec(n_obs_steps=2, horizon=16), episodes=train)
    loader = make_dataloader(dataset, batch_size=64, steps=1000, num_workers=2)  # what `vla train` reads

"Chunk" in this package is the store's storage chunk (frames of one feature stored as one unit),
never a policy's action chunk.
"""

from typing import Any

from vla.data.errors import (
    EpisodeStateError,
    FrameError,
    SchemaError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from vla.data.schema import FeatureSpec, Schema
from vla.data.store import EpisodeMeta, TrajectoryStore
from vla.data.validate import validate_store
from vla.data.windows import WindowSpec
from vla.data.writer import EpisodeWriter

# Training-side names import torch: imported on first use, so `vla data info` stays light.
_TRAINING_NAMES = frozenset(
    {"TrajectoryDataset", "split_episodes", "StorageLocalitySampler", "make_dataloader"}
)


def __getattr__(name: str) -> Any:
    if name in _TRAINING_NAMES:
        from vla.data import dataset, loader, sampler

        for module in (dataset, loader, sampler):
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module 'vla.data' has no attribute {name!r}")


__all__ = [
    "EpisodeMeta",
    "EpisodeStateError",
    "EpisodeWriter",
    "FeatureSpec",
    "FrameError",
    "Schema",
    "SchemaError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StorageLocalitySampler",
    "TrajectoryDataset",
    "TrajectoryStore",
    "WindowSpec",
    "make_dataloader",
    "split_episodes",
    "validate_store",
]
