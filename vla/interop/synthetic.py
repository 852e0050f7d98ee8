"""Small synthetic LeRobot datasets built locally with ``LeRobotDataset.create`` (tests, benchmarks).

Images are smooth gradients with a moving soft disc: video codecs compress them the way they
compress camera footage, so the measured loss of a round trip is meaningful (pure noise would not be).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)
from vla.features import ACTION_KEY, STATE_KEY, camera_key

TASKS = ("pick up the red cube", "push the blue block to the goal")


def smooth_frames(episode: int, length: int, size: int) -> np.ndarray:
    """uint8 (length, size, size, 3) frames: a colour gradient with a moving disc, no noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.arange(length, dtype=np.float32)[:, None, None] / max(length, 1)
    cx, cy = 0.3 + 0.4 * t, 0.5 + 0.2 * np.sin(6.0 * t + episode)
    disc = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)  # soft edge, no aliasing
    red = 60 + 120 * xx + 60 * disc
    green = 50 + 100 * yy + (20 * episode) % 80
    blue = 90 + 80 * disc
    frames = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    return np.clip(frames, 0, 255).astype(np.uint8)


def lerobot_test_features(image_size: int, state_dim: int, action_dim: int) -> dict[str, dict]:
    """One camera (``front``, video), a state, an action and a scalar reward (kind ``other`` for us)."""
    return {
        camera_key("front"): {
            "dtype": "video",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        },
        STATE_KEY: {
            "dtype": "float32",
            "shape": (state_dim,),
            "names": [f"joint_{i}" for i in range(state_dim)],
        },
        ACTION_KEY: {
            "dtype": "float32",
            "shape": (action_dim,),
            "names": [f"motor_{i}" for i in range(action_dim)],
        },
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    }


def write_lerobot_dataset(
    root: str | Path,
    repo_id: str = "local/synthetic",
    num_episodes: int = 3,
    length: int = 20,
    image_size: int = 32,
    state_dim: int = 5,
    action_dim: int = 4,
    fps: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Create a finalized LeRobot v3.0 dataset at ``root``; returns what was written, for comparisons.

    The result maps ``"episodes"`` to a list of ``{feature: (T, ...) array, "task": str}``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    rng = np.random.default_rng(seed)
    features = lerobot_test_features(image_size, state_dim, action_dim)
    dataset = LeRobotDataset.create(
        repo_id,
        fps=fps,
        features=features,
        root=root,
        robot_type="synthetic_arm",
        use_videos=True,
        video_backend="pyav",
    )
    written = []
    try:
        for episode in range(num_episodes):
            columns = {
                camera_key("front"): smooth_frames(episode, length, image_size),
                STATE_KEY: rng.normal(size=(length, state_dim)).astype(np.float32),
                ACTION_KEY: rng.normal(size=(length, action_dim)).astype(np.float32),
                "next.reward": (np.arange(length, dtype=np.float32) / length)[:, None],
            }
            task = TASKS[episode % len(TASKS)]
            for t in range(length):
                dataset.add_frame({**{k: v[t] for k, v in columns.items()}, "task": task})
            dataset.save_episode()
            written.append({**columns, "task": task})
    finally:
        dataset.finalize()
    return {"episodes": written, "fps": fps, "features": features}


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images (inf when identical)."""
    if reference.shape != decoded.shape:
        raise ValueError(f"cannot compare images of shapes {reference.shape} and {decoded.shape}")
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
