"""Loader throughput of ``LeRobotDataset`` on the windows our training reads, for ``scripts/bench_data.py``.

A sample is what one training step needs per batch element: ``n_obs_steps`` history frames of every
camera and of ``observation.state`` and a ``horizon``-step action chunk, exactly the window
:class:`vla.data.TrajectoryDataset` returns for ``WindowSpec(n_obs_steps, horizon)``. LeRobot gets
the same window through ``delta_timestamps``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)
from vla.features import ACTION_KEY, STATE_KEY

BATCH_SIZE = 8


def window_delta_timestamps(
    features: dict[str, dict], fps: int, n_obs_steps: int, horizon: int
) -> dict[str, list[float]]:
    """``delta_timestamps`` for the history of each camera and the state, and the action chunk."""
    history = [(i - (n_obs_steps - 1)) / fps for i in range(n_obs_steps)]
    deltas = {key: history for key, ft in features.items() if ft["dtype"] in ("image", "video")}
    if STATE_KEY in features:
        deltas[STATE_KEY] = history
    deltas[ACTION_KEY] = [i / fps for i in range(horizon)]
    return deltas


def default_video_backend() -> str:
    """The backend ``LeRobotDataset`` picks when none is given (torchcodec if importable, else pyav)."""
    from lerobot.datasets.video_utils import get_safe_default_codec

    return get_safe_default_codec()


def measure_lerobot_dataset(
    root: str | Path,
    repo_id: str,
    n_obs_steps: int,
    horizon: int,
    num_samples: int,
    num_workers: int,
    video_backend: str | None = None,
    seed: int = 0,
) -> float:
    """Samples/s of ``LeRobotDataset`` (random windows, batches of 8, ``num_workers`` processes).

    ``video_backend=None`` is lerobot's default (see :func:`default_video_backend`; torchcodec fails
    on its first sample when FFmpeg is not installed). The first batch (worker start, file opening)
    is not timed.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    if n_obs_steps < 1 or horizon < 1 or num_samples < 1 or num_workers < 0:
        raise ValueError("n_obs_steps, horizon and num_samples must be >= 1 and num_workers >= 0")
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    deltas = window_delta_timestamps(meta.features, meta.fps, n_obs_steps, horizon)
    dataset = LeRobotDataset(repo_id, root=root, delta_timestamps=deltas, video_backend=video_backend)
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=num_samples + BATCH_SIZE, generator=generator
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        sampler=sampler,
        num_workers=num_workers,
        # forkserver: a forked child inherits the parent's decoder and GL threads' locks in whatever
        # state they were in, and can hang on them; a fresh server process holds none.
        multiprocessing_context="forkserver" if num_workers > 0 else None,
        persistent_workers=False,
    )
    iterator = iter(loader)
    first = next(iterator)  # warm-up, untimed
    _check_window(first, n_obs_steps, horizon)
    count = 0
    start = time.perf_counter()
    for batch in iterator:
        count += len(batch[ACTION_KEY])
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 else float("nan")


def _check_window(batch: dict, n_obs_steps: int, horizon: int) -> None:
    """Fail loudly if lerobot did not return the window we asked for (the figures would mean nothing)."""
    action = batch[ACTION_KEY]
    if tuple(action.shape[1:2]) != (horizon,):
        raise RuntimeError(
            f"LeRobotDataset returned action {tuple(action.shape)}, expected (B, {horizon}, A)"
        )
    if STATE_KEY in batch and tuple(batch[STATE_KEY].shape[1:2]) != (n_obs_steps,):
        raise RuntimeError(
            f"LeRobotDataset returned state {tuple(batch[STATE_KEY].shape)}, expected T={n_obs_steps}"
        )


if __name__ == "__main__":  # pragma: no cover - manual check: python -m vla.interop.loader_bench ROOT REPO_ID
    import sys

    root_arg, repo_arg = sys.argv[1], sys.argv[2]
    for backend in (None, "pyav"):
        try:
            rate = measure_lerobot_dataset(root_arg, repo_arg, 2, 16, 256, 0, video_backend=backend)
            print(f"backend={backend or default_video_backend()}: {rate:.1f} samples/s")
        except Exception as exc:  # report and go on: the default backend may lack FFmpeg
            print(f"backend={backend or default_video_backend()}: failed ({type(exc).__name__}: {exc})")
