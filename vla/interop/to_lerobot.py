"""Convert a trajectory store into a LeRobot v3.0 dataset (``vla convert to-lerobot``).

The features dict keeps our feature names, dtypes, shapes and names (cameras become ``video``
features, encoded by lerobot itself); the episode instruction is every frame's ``task``; fps and
robot type are copied. ``finalize()`` is always called, so ``LeRobotDataset`` and lerobot's training
load the result.

Restart semantics: the dataset is written into ``<out>.partial`` and renamed to ``<out>`` only once
complete and finalized, so ``<out>`` is never a half-written dataset. A rerun after an interruption
deletes the stale ``<out>.partial`` and converts again (lerobot cannot append to an unfinalized
dataset). A rerun whose ``<out>`` already holds exactly the requested episodes does nothing; one
that asks for a different number of episodes rebuilds ``<out>`` (again via ``.partial``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)
from vla.data.store import TrajectoryStore
from vla.progress import progress_bar

DEFAULT_VCODEC = "libsvtav1"  # lerobot's own default (AV1)


def lerobot_features(store: TrajectoryStore) -> dict[str, dict]:
    """The LeRobot ``features`` dict of a store: our names, dtypes, shapes and names."""
    features: dict[str, dict] = {}
    for key, spec in store.schema.features.items():
        shape = tuple(int(s) for s in spec.shape)
        if spec.kind == "image":
            features[key] = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
            continue
        # Unnamed stays unnamed (lerobot accepts names=None), so a round trip keeps the schema equal.
        names = list(spec.names) if spec.names else None
        features[key] = {"dtype": str(np.dtype(spec.dtype)), "shape": shape, "names": names}
    return features


def _integer_fps(fps: float) -> int:
    if float(fps) != int(fps) or fps <= 0:
        raise ValueError(f"LeRobot datasets need a positive integer fps; the store has fps {fps}")
    return int(fps)


def _complete_episode_count(out: Path) -> int | None:
    """Episodes of a finalized LeRobot dataset at ``out``, or None if ``out`` is not one."""
    info = out / "meta" / "info.json"
    if not info.is_file():
        return None
    try:
        return int(json.loads(info.read_text())["total_episodes"])
    except (ValueError, KeyError, TypeError):
        return None


def _frame(episode: dict[str, Any], t: int, keys: list[str], instruction: str) -> dict[str, Any]:
    frame: dict[str, Any] = {key: np.asarray(episode[key][t]) for key in keys}
    frame["task"] = instruction
    return frame


def convert_to_lerobot(
    store_path: str | Path,
    out: str | Path,
    repo_id: str,
    *,
    max_episodes: int | None = None,
    vcodec: str = DEFAULT_VCODEC,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the store's episodes (the first ``max_episodes``) as a LeRobot dataset at ``out``.

    Returns ``out``. See the module docstring for what a rerun does; ``overwrite`` rebuilds even
    when ``out`` already holds the requested episodes.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    store = TrajectoryStore.open(store_path, mode="r")
    out = Path(out)
    wanted = store.num_episodes if max_episodes is None else min(store.num_episodes, max_episodes)
    if wanted == 0:
        raise ValueError(f"{store_path}: the store holds no episode to convert")
    existing = _complete_episode_count(out)
    if out.exists() and existing is None:
        raise FileExistsError(f"{out} exists and is not a LeRobot dataset; remove it or pick another --out")
    if existing == wanted and not overwrite:
        return out
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run: lerobot cannot resume it
    features = lerobot_features(store)
    keys = list(features)
    dataset = LeRobotDataset.create(
        repo_id=repo_id,
        fps=_integer_fps(store.fps),
        features=features,
        root=partial,
        robot_type=store.robot_type,
        use_videos=True,
        vcodec=vcodec,
        video_backend="pyav",
    )
    try:
        for index in progress_bar(
            range(wanted), desc=f"to-lerobot {repo_id}", unit="episode", disable=not progress
        ):
            episode = store.read_episode(index)
            instruction = store.episode_meta(index).instruction
            for t in range(len(episode[keys[0]])):
                dataset.add_frame(_frame(episode, t, keys, instruction))
            dataset.save_episode()
    finally:
        dataset.finalize()  # also on failure: closes the parquet writers before the folder is removed
    # Swap in the new dataset; the old one is deleted only once the new one is in place.
    previous = out.with_name(out.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    if out.exists():
        out.rename(previous)
    partial.rename(out)
    if previous.exists():
        shutil.rmtree(previous)
    return out
