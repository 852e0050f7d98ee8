"""An untrained (random-weight) policy checkpoint for benchmarks and smoke tests of the deploy path.

Latency, wire format and server robustness do not depend on what a policy learned, only on its
architecture and its features, so a real checkpoint of the ``tiny`` policy with random weights is the
honest stand-in when no trained one is at hand. It is written by the training code itself (one
optimizer step on a small synthetic store with the robot's features), so its layout, statistics and
tokenizers are exactly those of a trained checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vla import checkpoint as ckpt


def write_untrained_checkpoint(
    out_dir: str | os.PathLike[str],
    *,
    cameras: Sequence[str] = ("front", "wrist"),
    image_size: int = 64,
    state_dim: int = 8,
    action_dim: int = 4,
    policy: str = "tiny",
    overrides: Sequence[str] = (),
    seed: int = 0,
) -> Path:
    """Write ``out_dir/store.zarr`` and ``out_dir/run`` and return the checkpoint directory.

    ``policy`` names a file of ``policies/``; ``overrides`` are extra ``key=value`` settings (e.g.
    ``policy.model.n_layer=1`` for a smaller model in tests). An existing checkpoint in ``out_dir``
    is reused as is.
    """
    from vla.data.synthetic import synthetic_schema, write_synthetic_store
    from vla.train.cli import train_config
    from vla.train.loop import train

    out = Path(out_dir)
    run_dir = out / "run"
    existing = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if existing is not None:
        return existing
    store_path = out / "store.zarr"
    schema = synthetic_schema(
        tuple(cameras), image_size=image_size, state_dim=state_dim, action_dim=action_dim
    )
    store = write_synthetic_store(store_path, 4, episode_length=12, schema=schema, seed=seed, overwrite=True)
    store.compute_stats()
    store.close()
    # One step (the training code's own checkpoint writer needs a step to save); the learning rate
    # is still warming up, so the weights are the random initialisation in all but name.
    cfg = train_config([
        f"policy={policy}", f"store={store_path}", f"out={run_dir}", "device=cpu",
        "train.steps=1", "train.batch_size=2", "train.val_fraction=0.0", "train.num_workers=0",
        "train.save_every=1", "train.log_every=1", "train.eval_every=0", "train.progress=false",
        f"train.seed={seed}", *overrides,
    ])  # fmt: skip
    return ckpt.resolve_checkpoint(train(cfg).run_dir)
