"""``TrajectoryStore``: create, open and read a Zarr v3 store of robot episodes.

The root group's ``vla`` attribute is the commit record: how many episodes and frames are committed.
Zarr's local store rewrites ``zarr.json`` atomically (temporary file + ``os.replace``), so that one
write is the commit point of an episode. Arrays may run past the committed end after a crash (or
while a writer is mid-episode): readers never look past it and opening for append truncates it.

Writers store every chunk, even one equal to the fill value (zarr skips those by default), so every
chunk of committed frames exists on disk and a missing one is damage that readers report
(:mod:`vla.data.rows`), never zeros. The writer lock (:mod:`vla.data.lock`) is taken before anything
is created or deleted in the store's directory and its file is never removed, so it protects a store
from the first byte on.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from vla.data import layout
from vla.data.errors import StoreCorruptError, StoreError, StoreLockedError
from vla.data.interrupts import signals_held
from vla.data.lock import LOCK_NAME, WriterLock
from vla.data.rows import ChunkReader, read_rows, reader_for
from vla.data.schema import Schema

if TYPE_CHECKING:
    from vla.data.writer import EpisodeWriter

MODES = ("r", "a")


@dataclass(frozen=True)
class EpisodeMeta:
    """Metadata of one committed episode; ``start`` is its first frame in the concatenated arrays."""

    index: int
    length: int
    instruction: str
    success: bool
    env_id: str | None
    seed: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    start: int = 0


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an fsspec URL (s3://, gs://, ...) rather than a local directory."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def _local_path(path: str | os.PathLike[str]) -> Path:
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def open_zarr_root(path: str | os.PathLike[str], read_only: bool) -> zarr.Group:
    """Open the root group of a store at a local path or any fsspec URL zarr supports."""
    if is_remote(path):
        store = zarr.storage.FsspecStore.from_url(str(path), read_only=read_only)
    else:
        store = zarr.storage.LocalStore(_local_path(path), read_only=read_only)
    try:
        return zarr.open_group(store, mode="r" if read_only else "r+", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreCorruptError(f"{path}: no trajectory store here ({exc})") from exc


def read_text(column: zarr.Group, num_episodes: int) -> list[str]:
    """All committed entries of a text column (UTF-8 bytes plus end offsets)."""
    if num_episodes == 0:
        return []
    ends = np.asarray(column["ends"][:num_episodes])
    data = bytes(np.asarray(column["bytes"][: int(ends[-1])]))
    starts = np.concatenate([[0], ends[:-1]])
    return [data[s:e].decode("utf-8") for s, e in zip(starts, ends, strict=True)]


def _has_content(directory: Path) -> bool:
    """Whether ``directory`` holds anything but the writer lock file."""
    return directory.is_dir() and any(entry.name != LOCK_NAME for entry in directory.iterdir())


def _empty_directory(directory: Path) -> None:
    """Delete everything in ``directory`` except the writer lock file (held by the caller)."""
    for entry in directory.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class TrajectoryStore:
    """A Zarr v3 store of episodes. Use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, path: str, root: zarr.Group, mode: str, lock: WriterLock | None) -> None:
        self.path = path
        self.mode = mode
        self._root = root
        self._lock = lock
        self._arrays: dict[str, zarr.Array] = {}
        self._readers: dict[str, ChunkReader] = {}
        self._meta_cache: list[EpisodeMeta] | None = None
        self._writer_active = False
        self._doc = self._read_doc()
        self.schema = Schema.from_json(self._doc["schema"])

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        schema: Schema,
        fps: float,
        robot_type: str,
        *,
        overwrite: bool = False,
        image_codec: str = "lz4",
    ) -> TrajectoryStore:
        """Create an empty store at local ``path``; it comes back open for append (writer lock held).

        ``image_codec`` is ``"lz4"`` (fast reads, the default) or ``"zstd"`` (smaller files).
        """
        if is_remote(path):
            raise StoreError(f"{path}: stores are written on a local disk (the writer lock needs one)")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        local = _local_path(path)
        if _has_content(local) and not overwrite:
            raise FileExistsError(f"{local} exists and is not empty (pass overwrite=True to replace it)")
        local.mkdir(parents=True, exist_ok=True)
        # The lock first, and its file kept: replacing the directory (or opening the group with
        # mode="w", which empties it) would drop the lock file while this process holds it, and a
        # second writer would lock a fresh file and write into the same store.
        lock = WriterLock(local)
        lock.acquire()
        try:
            if _has_content(local):
                if not overwrite:
                    raise FileExistsError(
                        f"{local} exists and is not empty (pass overwrite=True to replace it)"
                    )
                _empty_directory(local)
            root = zarr.create_group(zarr.storage.LocalStore(local), zarr_format=3)
            data = root.create_group("data")
            for name, spec in schema.features.items():
                layout.create_feature_array(data, name, spec, image_codec)
            layout.create_meta_arrays(root.create_group("meta"))
            # Written last: a store whose creation died has no commit record and is refused.
            root.attrs[layout.ATTRS_KEY] = {
                "format_version": layout.FORMAT_VERSION,
                "schema": schema.to_json(),
                "fps": float(fps),
                "robot_type": str(robot_type),
                "committed": {"num_episodes": 0, "num_frames": 0},
                "stats": None,
            }
        except BaseException:
            lock.release()
            raise
        return cls(str(local), root, "a", lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> TrajectoryStore:
        """Open a store read-only (``"r"``: no lock, any fsspec URL) or for append (``"a"``).

        Append takes the writer lock (:class:`StoreLockedError` if a live process holds it) and
        repairs what a crashed writer left: arrays past the committed end are truncated.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "a" and is_remote(path):
            raise StoreError(f"{path}: stores are written on a local disk (the writer lock needs one)")
        lock = None
        if mode == "a":
            if not _local_path(path).is_dir():
                raise StoreCorruptError(f"{path}: no trajectory store here")
            lock = WriterLock(_local_path(path))
            lock.acquire()
        try:
            root = open_zarr_root(path, read_only=mode == "r")
            store = cls(str(path), root, mode, lock)
            if mode == "a":
                store._repair()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return store

    def close(self) -> None:
        """Release the writer lock (append mode); reading objects stay usable."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrajectoryStore({self.path!r}, mode={self.mode!r}, episodes={self.num_episodes}, frames={self.num_frames})"

    # ------------------------------------------------------------ the commit record
    def _read_doc(self) -> dict[str, Any]:
        doc = self._root.attrs.asdict().get(layout.ATTRS_KEY)
        if not isinstance(doc, dict) or "committed" not in doc or "schema" not in doc:
            holder = None if is_remote(self.path) else WriterLock(_local_path(self.path)).holder()
            if holder is not None and self._lock is None:  # not a dead creation: one in progress
                raise StoreLockedError(f"{self.path} is being created by another writer (process {holder})")
            raise StoreCorruptError(f"{self.path}: no commit record (not a vla store, or its creation died)")
        if doc.get("format_version") != layout.FORMAT_VERSION:
            raise StoreCorruptError(
                f"{self.path}: format version {doc.get('format_version')} (this vla reads {layout.FORMAT_VERSION})"
            )
        return doc

    def refresh(self) -> None:
        """Re-read the commit record: a reader then sees episodes committed since it opened."""
        self._root = open_zarr_root(self.path, read_only=self.mode == "r")
        self._doc = self._read_doc()
        self._arrays.clear()
        self._readers.clear()
        self._meta_cache = None

    def _commit(self, num_episodes: int, num_frames: int, stats: dict | None = None) -> None:
        doc = dict(self._doc)
        doc["committed"] = {"num_episodes": int(num_episodes), "num_frames": int(num_frames)}
        if stats is not None:
            doc["stats"] = stats
        # Ctrl-C or SIGTERM waits for the record and this object's copy of it to agree (interrupts).
        with signals_held():
            self._root.attrs[layout.ATTRS_KEY] = doc  # the atomic commit point
            self._doc = doc
            self._meta_cache = None

    def _require_append(self, what: str) -> None:
        if self.mode != "a" or self._lock is None:
            raise StoreError(f"{what} needs the store open for append: TrajectoryStore.open(path, mode='a')")

    def _repair(self) -> None:
        """Truncate arrays past the committed end and drop temporary files of a killed writer."""
        frames, episodes = self.num_frames, self.num_episodes
        targets = {f"data/{name}": frames for name in self.schema.features}
        targets.update({f"meta/{name}": episodes for name in layout.NUMERIC_META})
        for name in layout.TEXT_COLUMNS:
            ends = self.array(f"meta/{name}/ends")
            targets[f"meta/{name}/ends"] = episodes
            targets[f"meta/{name}/bytes"] = int(ends[episodes - 1]) if episodes else 0
        for key, length in targets.items():
            array = self.array(key)
            if array.shape[0] < length:
                raise StoreCorruptError(f"{self.path}: {key} holds {array.shape[0]} rows, {length} committed")
            if array.shape[0] > length:
                array.resize((length, *array.shape[1:]))
        for leftover in Path(self.path).rglob("*.partial"):
            leftover.unlink(missing_ok=True)
        self._arrays.clear()
        self._readers.clear()

    # ------------------------------------------------------------------ reading
    @property
    def fps(self) -> float:
        return float(self._doc["fps"])

    @property
    def robot_type(self) -> str:
        return str(self._doc["robot_type"])

    @property
    def num_episodes(self) -> int:
        return int(self._doc["committed"]["num_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self._doc["committed"]["num_frames"])

    def array(self, key: str) -> zarr.Array:
        """The zarr array at ``key`` (``data/<feature>``, ``meta/episode_ends``, ...), cached."""
        if key not in self._arrays:
            try:
                array = self._root[key]
            except KeyError as exc:
                raise StoreCorruptError(f"{self.path}: array {key!r} is missing") from exc
            if self.mode == "a":  # every chunk is stored, even all fill value: missing means damaged
                array = array.with_config({"write_empty_chunks": True})
            self._arrays[key] = array
        return self._arrays[key]

    def reader(self, feature: str) -> ChunkReader:
        """The chunk reader of ``feature`` (:mod:`vla.data.rows`), cached."""
        if feature not in self._readers:
            if feature not in self.schema.features:
                raise KeyError(f"unknown feature {feature!r}; the store has {sorted(self.schema.features)}")
            self._readers[feature] = reader_for(self.array(f"data/{feature}"), self.path, feature)
        return self._readers[feature]

    def read_rows(self, feature: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Committed frames ``[start, stop)`` of ``feature`` (default: all of them), checksummed.

        A missing or corrupt chunk raises :class:`StoreCorruptError` naming the feature and frames.
        """
        stop = self.num_frames if stop is None else int(stop)
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(
                f"frames [{start}, {stop}) are not within the {self.num_frames} committed frames"
            )
        return read_rows(self.reader(feature), int(start), stop)

    def episode_ends(self) -> np.ndarray:
        """Exclusive end frame of every committed episode (int64)."""
        if self.num_episodes == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.array("meta/episode_ends")[: self.num_episodes], dtype=np.int64)

    def episodes_meta(self) -> list[EpisodeMeta]:
        """Metadata of every committed episode, read in one pass and cached."""
        if self._meta_cache is None:
            n = self.num_episodes
            numeric = {k: np.asarray(self.array(f"meta/{k}")[:n]) for k in layout.NUMERIC_META} if n else {}
            texts = {k: read_text(self._root[f"meta/{k}"], n) for k in layout.TEXT_COLUMNS}
            self._meta_cache = [
                EpisodeMeta(
                    index=i,
                    length=int(numeric["length"][i]),
                    instruction=texts["instruction"][i],
                    success=bool(numeric["success"][i]),
                    env_id=texts["env_id"][i] or None,
                    seed=None if int(numeric["seed"][i]) == layout.NO_SEED else int(numeric["seed"][i]),
                    extra=json.loads(texts["extra"][i]),
                    start=int(numeric["episode_ends"][i] - numeric["length"][i]),
                )
                for i in range(n)
            ]
        return self._meta_cache

    def episode_meta(self, index: int) -> EpisodeMeta:
        """Metadata of committed episode ``index`` (negative indices count from the end)."""
        return self.episodes_meta()[self._check_index(index)]

    def _check_index(self, index: int) -> int:
        n = self.num_episodes
        if not -n <= index < n:
            raise IndexError(f"episode {index} out of range: the store has {n} committed episodes")
        return index % n

    def read_episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All frames of committed episode ``index``: ``{feature: array (length, ...)}``."""
        index = self._check_index(index)
        ends = self.episode_ends()
        start, stop = (int(ends[index - 1]) if index else 0), int(ends[index])
        names = list(self.schema.features) if keys is None else list(keys)
        unknown = [k for k in names if k not in self.schema.features]
        if unknown:
            raise KeyError(f"unknown features {unknown}; the store has {sorted(self.schema.features)}")
        return {k: self.read_rows(k, start, stop) for k in names}

    # ------------------------------------------------------------------ writing
    def writer(self, flush_frames: int | None = None) -> EpisodeWriter:
        """The episode writer (one at a time); use it as a context manager."""
        from vla.data.writer import EpisodeWriter

        self._require_append("writing")
        if self._writer_active:
            raise StoreError("this store already has an active writer")
        return EpisodeWriter(self, flush_frames=flush_frames)

    # --------------------------------------------------------------- statistics
    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        """Saved statistics ``{feature: {mean, std, min, max, q01, q99}}`` (None if never computed)."""
        from vla.data.stats import stats_from_json

        saved = self._doc.get("stats")
        return None if saved is None else stats_from_json(saved)

    def stats_are_current(self) -> bool:
        """Whether the saved statistics cover every committed frame."""
        saved = self._doc.get("stats")
        return bool(saved) and saved.get("num_frames") == self.num_frames

    def compute_stats(self, write: bool = True) -> dict[str, dict[str, np.ndarray]]:
        """Compute the statistics in one streaming pass; ``write`` saves them in the store."""
        from vla.data.stats import compute_stats, stats_from_json

        doc = compute_stats(self)
        if write:
            self._require_append("saving statistics")
            self._commit(self.num_episodes, self.num_frames, stats=doc)
        return stats_from_json(doc)
