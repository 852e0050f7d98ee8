"""Shared by the training and runtime tests: a tiny store and a tiny policy config in a temp config root."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_MODEL = {
    "image_size": 16, "patch_size": 8, "n_obs_steps": 2, "horizon": 4,
    "n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.1, "max_text_len": 8,
}  # fmt: skip
TINY_TRAIN = {
    "steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "val_fraction": 0.25, "val_batches": 2,
    "log_every": 1, "val_every": 3, "save_every": 3, "num_workers": 0, "progress": False, "seed": 0,
}  # fmt: skip


def make_tiny_store(path: Path, num_episodes: int = 4, seed: int = 0) -> Path:
    """A synthetic store: 2 cameras of 16x16, state 4, action 3, episodes of 12 frames, with stats."""
    from vla.data.synthetic import synthetic_schema, write_synthetic_store

    schema = synthetic_schema(("front", "wrist"), image_size=16, state_dim=4, action_dim=3)
    store = write_synthetic_store(path, num_episodes, episode_length=12, schema=schema, seed=seed)
    store.compute_stats()
    store.close()
    return path


def make_config_root(root: Path, store: Path, train: dict | None = None) -> Path:
    """``root/{envs,datasets,policies}`` with dataset ``tinyds`` (-> ``store``) and policy ``testtiny``."""
    for folder in ("envs", "datasets", "policies", "benchmarks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "datasets" / "tinyds.yaml").write_text(yaml.safe_dump({"out": str(store)}))
    policy = {"model": TINY_MODEL, "train": {**TINY_TRAIN, **(train or {})}}  # ar_bins: binning tokens
    (root / "policies" / "testtiny.yaml").write_text(yaml.safe_dump(policy))
    return root
