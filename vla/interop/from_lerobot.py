"""Convert a local LeRobot v3.0 dataset into a trajectory store (``vla convert from-lerobot``).

Every frame and feature comes across: cameras (video or image features) become
``observation.images.<camera>`` uint8 (H, W, 3), ``observation.state`` and ``action`` keep their
kind, every other numeric feature is kind ``"other"``. The per-frame task text becomes the episode
instruction; fps and robot type are copied. Videos are decoded with PyAV.

Restart semantics: each stored episode records ``source_episode_index`` (and ``source_repo_id``) in
its metadata, and a rerun into the same store skips the source episodes already committed, so an
interrupted conversion is finished by running the same command again, without duplicates. An
episode interrupted half-way is never committed, so it is converted again from its first frame.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)
from vla.data.schema import FeatureSpec, Schema
from vla.data.store import TrajectoryStore
from vla.features import ACTION_KEY, STATE_KEY, camera_key, is_image_key
from vla.interop.video import decode_frames
from vla.progress import progress_bar

log = logging.getLogger(__name__)

# Columns every LeRobot dataset carries for its own bookkeeping; the store has its own.
LEROBOT_BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
SOURCE_EPISODE_FIELD = "source_episode_index"
SOURCE_REPO_FIELD = "source_repo_id"


@dataclass(frozen=True)
class FromLeRobotReport:
    """What one run converted."""

    converted: list[int]  # source episode indices committed by this run
    skipped: list[int]  # source episode indices found already committed
    source_episodes: int  # episodes in the source dataset
    store_episodes: int  # episodes in the store after the run


def _flat_names(names: Any, size: int) -> list[str] | None:
    """LeRobot names are a list, a one-entry dict of lists ({"motors": [...]}) or None."""
    if isinstance(names, dict):
        names = next(iter(names.values())) if len(names) == 1 else None
    if isinstance(names, list) and len(names) == size and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _image_shape(key: str, feature: dict) -> tuple[int, int, int]:
    """(H, W, 3) of a LeRobot image/video feature stored as (H, W, C) or (C, H, W)."""
    shape = tuple(int(s) for s in feature["shape"])
    names = feature.get("names") or []
    if len(shape) != 3:
        raise ValueError(f"LeRobot feature {key!r}: an image must have 3 dimensions, got shape {shape}")
    channel_first = bool(names) and str(names[0]).startswith("channel")
    height, width, channels = (shape[1], shape[2], shape[0]) if channel_first else shape
    if channels != 3:
        raise ValueError(f"LeRobot feature {key!r}: expected 3 colour channels, got shape {shape}")
    return height, width, 3


def _store_key(key: str, feature: dict) -> str:
    """Our feature name for LeRobot feature ``key``: cameras always under ``observation.images.``."""
    if feature["dtype"] in ("image", "video") and not is_image_key(key):
        return camera_key(key.rsplit(".", 1)[-1])  # e.g. "observation.image" -> camera "image"
    return key


def schema_from_lerobot(features: dict[str, dict]) -> tuple[Schema, dict[str, str]]:
    """Our schema for a LeRobot ``features`` dict, and the LeRobot key -> store key mapping.

    String features (and LeRobot's bookkeeping columns) are left out; they are logged.
    """
    specs: dict[str, FeatureSpec] = {}
    key_map: dict[str, str] = {}
    for key, feature in features.items():
        if key in LEROBOT_BOOKKEEPING:
            continue
        dtype = feature["dtype"]
        store_key = _store_key(key, feature)
        if store_key in specs:
            raise ValueError(f"LeRobot features {key!r} and another both map to store feature {store_key!r}")
        if dtype in ("image", "video"):
            specs[store_key] = FeatureSpec(dtype="uint8", shape=_image_shape(key, feature), kind="image")
        elif dtype == "string":
            log.warning("leaving out string feature %r (the store keeps numeric features only)", key)
            continue
        else:
            shape = tuple(int(s) for s in feature["shape"])
            kind = {STATE_KEY: "state", ACTION_KEY: "action"}.get(key, "other")
            names = _flat_names(feature.get("names"), int(np.prod(shape))) if len(shape) == 1 else None
            specs[store_key] = FeatureSpec(dtype=str(np.dtype(dtype)), shape=shape, kind=kind, names=names)
        key_map[key] = store_key
    return Schema(features=specs), key_map


def _open_or_create_store(out: Path, schema: Schema, fps: int, robot_type: str | None) -> TrajectoryStore:
    """Open ``out`` for appending (checking it matches the source) or create it."""
    if not out.exists():
        return TrajectoryStore.create(out, schema, fps=fps, robot_type=robot_type)
    store = TrajectoryStore.open(out, mode="a")
    if store.schema != schema:
        raise ValueError(
            f"{out} exists with a different schema than the LeRobot dataset; "
            f"store: {sorted(store.schema.features)}, dataset: {sorted(schema.features)}"
        )
    if float(store.fps) != float(fps):
        raise ValueError(f"{out} exists with fps {store.fps}, the LeRobot dataset has fps {fps}")
    return store


def _committed_sources(store: TrajectoryStore, repo_id: str) -> set[int]:
    """Source episode indices of ``repo_id`` already in ``store``."""
    done: set[int] = set()
    for meta in store.episodes_meta():
        if meta.extra.get(SOURCE_REPO_FIELD, repo_id) == repo_id and SOURCE_EPISODE_FIELD in meta.extra:
            done.add(int(meta.extra[SOURCE_EPISODE_FIELD]))
    return done


def _episode_instruction(
    task_indices: np.ndarray, tasks: dict[int, str], episode: int
) -> tuple[str, list[str]]:
    """The instruction of an episode (its first task) and all its distinct tasks in order."""
    ordered: list[str] = []
    for index in task_indices.reshape(-1).tolist():
        if int(index) not in tasks:
            raise ValueError(f"episode {episode}: task_index {index} is not in meta/tasks.parquet")
        if tasks[int(index)] not in ordered:
            ordered.append(tasks[int(index)])
    return ordered[0], ordered


def _read_episode(
    dataset: Any, episode: int, key_map: dict[str, str], tasks: dict[int, str]
) -> dict[str, Any]:
    """All columns of one source episode: store key -> (T, ...) array, plus ``_tasks``."""
    meta = dataset.meta.episodes[episode]
    start, stop = int(meta["dataset_from_index"]), int(meta["dataset_to_index"])
    rows = dataset.hf_dataset.with_format("numpy")[start:stop]
    episode_column = np.asarray(rows["episode_index"]).reshape(-1)
    if len(episode_column) != stop - start or (episode_column != episode).any():
        raise ValueError(
            f"episode {episode}: rows {start}..{stop} of the data files belong to other episodes"
        )
    frame_index = np.asarray(rows["frame_index"]).reshape(-1)
    if not np.array_equal(frame_index, np.arange(stop - start)):
        raise ValueError(f"episode {episode}: frame_index is not 0..{stop - start - 1} in order")
    timestamps = np.asarray(rows["timestamp"], dtype=np.float64).reshape(-1)
    tolerance = 0.25 / dataset.meta.fps  # a quarter frame: robust to float32 timestamps, never ambiguous
    columns: dict[str, Any] = {}
    for key, store_key in key_map.items():
        feature = dataset.meta.features[key]
        if feature["dtype"] == "video":
            path = dataset.root / dataset.meta.get_video_file_path(episode, key)
            offset = float(meta[f"videos/{key}/from_timestamp"])
            columns[store_key] = decode_frames(path, (timestamps + offset).tolist(), tolerance)
        elif feature["dtype"] == "image":
            images = np.stack([np.asarray(image) for image in rows[key]])
            if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
                images = images.transpose(0, 2, 3, 1)  # channel-first source
            columns[store_key] = images.astype(np.uint8)
        else:
            values = np.asarray(rows[key], dtype=np.dtype(feature["dtype"]))
            columns[store_key] = values.reshape((stop - start, *feature["shape"]))
    columns["_tasks"] = _episode_instruction(np.asarray(rows["task_index"]), tasks, episode)
    return columns


def _check_frames(columns: dict[str, Any], schema: Schema, episode: int) -> int:
    """Validate shapes and finiteness of one episode; return its length."""
    lengths = {key: len(columns[key]) for key in schema.features}
    length = next(iter(lengths.values()))
    if any(n != length for n in lengths.values()):
        raise ValueError(f"episode {episode}: features have different lengths {lengths}")
    for key, spec in schema.features.items():
        if tuple(columns[key].shape[1:]) != tuple(spec.shape):
            raise ValueError(
                f"episode {episode}, feature {key!r}: frames of shape {columns[key].shape[1:]}, "
                f"expected {tuple(spec.shape)}"
            )
        if np.issubdtype(columns[key].dtype, np.floating) and not np.isfinite(columns[key]).all():
            frame = int(np.argwhere(~np.isfinite(columns[key]).reshape(length, -1).all(1))[0, 0])
            raise ValueError(f"episode {episode}, feature {key!r}: NaN or infinite value at frame {frame}")
    return length


# What LeRobotDataset reads from meta/info.json before anything else.
INFO_KEYS = ("codebase_version", "fps", "features", "total_episodes", "data_path")


def missing_parts(root: Path) -> list[str]:
    """What a local LeRobot v3.0 dataset folder lacks (empty: complete enough to open).

    LeRobotDataset fetches whatever is missing from the Hub; offline that fails deep inside it, so
    the parts it needs are checked here first: ``meta/info.json`` (a JSON object with ``INFO_KEYS``
    and a ``features`` mapping), ``meta/tasks.parquet``, the episode index ``meta/episodes/``, the
    frames under ``data/`` and, per video feature, its files under ``videos/<feature>/``.
    """
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        return ["meta/info.json"]
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        return [f"a readable meta/info.json ({exc})"]
    if not isinstance(info, dict):
        return ["a JSON object in meta/info.json"]
    missing = [f"meta/info.json key {key!r}" for key in INFO_KEYS if key not in info]
    features = info.get("features")
    if "features" in info and not isinstance(features, dict):
        missing.append("a features mapping in meta/info.json")
    checks = {
        "meta/tasks.parquet": (root / "meta" / "tasks.parquet").is_file(),
        "meta/episodes/**/*.parquet": any((root / "meta" / "episodes").rglob("*.parquet")),
        "data/**/*.parquet": any((root / "data").rglob("*.parquet")),
    }
    for key, feature in (features if isinstance(features, dict) else {}).items():
        if isinstance(feature, dict) and feature.get("dtype") == "video":
            checks[f"videos/{key}/**/*.mp4"] = any((root / "videos" / key).rglob("*.mp4"))
    return missing + [part for part, present in checks.items() if not present]


def load_local_dataset(repo_id: str, root: str | Path, video_backend: str = "pyav") -> Any:
    """A complete LeRobot dataset from a local folder; never reaches the Hub."""
    root = Path(root)
    missing = missing_parts(root)
    if missing == ["meta/info.json"]:
        raise FileNotFoundError(f"{root} is not a LeRobot dataset folder (no meta/info.json)")
    if missing:
        raise FileNotFoundError(
            f"{root} is not a complete LeRobot v3.0 dataset; missing: {', '.join(missing)} "
            "(nothing is fetched from the Hugging Face Hub)"
        )
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend=video_backend)


def convert_from_lerobot(
    repo_id: str,
    root: str | Path,
    out: str | Path,
    *,
    max_episodes: int | None = None,
    progress: bool = True,
) -> FromLeRobotReport:
    """Append the episodes of the LeRobot dataset in ``root`` to the store ``out`` (created if absent).

    ``max_episodes`` caps the number of source episodes considered (the first ones); source episodes
    already committed to ``out`` by an earlier run are skipped.
    """
    dataset = load_local_dataset(repo_id, root)
    schema, key_map = schema_from_lerobot(dataset.meta.features)
    fps = int(dataset.meta.fps)
    store = _open_or_create_store(Path(out), schema, fps, dataset.meta.robot_type or "unknown")
    tasks = {int(row.task_index): str(task) for task, row in dataset.meta.tasks.iterrows()}
    total = int(dataset.meta.total_episodes)
    wanted = list(range(total if max_episodes is None else min(total, max_episodes)))
    done = _committed_sources(store, repo_id)
    todo = [e for e in wanted if e not in done]
    converted: list[int] = []
    with store, store.writer() as writer:
        for episode in progress_bar(
            todo, desc=f"from-lerobot {repo_id}", unit="episode", disable=not progress
        ):
            columns = _read_episode(dataset, episode, key_map, tasks)
            instruction, all_tasks = columns.pop("_tasks")
            length = _check_frames(columns, schema, episode)
            fields: dict[str, Any] = {SOURCE_EPISODE_FIELD: episode, SOURCE_REPO_FIELD: repo_id}
            if len(all_tasks) > 1:
                fields["tasks"] = all_tasks
            writer.start_episode(instruction, env_id=f"lerobot:{repo_id}", seed=None, **fields)
            for t in range(length):
                writer.add_frame({key: columns[key][t] for key in schema.features})
            writer.commit_episode(success=_episode_success(columns, length))
            converted.append(episode)
    return FromLeRobotReport(
        converted=converted,
        skipped=[e for e in wanted if e in done],
        source_episodes=total,
        store_episodes=store.num_episodes,
    )


def _episode_success(columns: dict[str, Any], length: int) -> bool:
    """LeRobot's optional ``next.success`` at the last frame; demonstrations count as successes otherwise."""
    success = columns.get("next.success")
    return bool(np.asarray(success).reshape(length, -1)[-1].any()) if success is not None else True
