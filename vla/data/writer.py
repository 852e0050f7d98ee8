"""``EpisodeWriter``: stream frames into a store and commit each episode atomically.

Frames are checked one by one against the schema, buffered, and flushed past the committed end
in blocks, so a long episode never sits whole in memory. ``commit_episode`` writes the episode's
metadata and then the commit record; until that last write the episode is invisible to readers,
and a crash leaves only rows past the committed end, which the next append-open truncates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vla.data import layout
from vla.data.errors import EpisodeStateError
from vla.data.schema import check_frame

if TYPE_CHECKING:
    from vla.data.store import TrajectoryStore


class EpisodeWriter:
    """Writes episodes into an append-mode store. Obtain it from ``store.writer()``."""

    def __init__(self, store: TrajectoryStore, flush_frames: int | None = None) -> None:
        self.store = store
        features = store.schema.features
        # Flushing whole shards keeps each stored file written about once per flush, not once per chunk.
        images = [layout.shard_frames(s) for s in features.values() if s.kind == "image"]
        self.flush_frames = flush_frames or max(images, default=1024)
        self._buffers: dict[str, list[np.ndarray]] = {name: [] for name in features}
        self._episode: dict[str, Any] | None = None
        self._frames = 0  # frames of the open episode
        self._flushed = 0  # of which already written past the committed end
        store._writer_active = True

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Discard an episode left open and release the store for another writer."""
        if self._episode is not None:
            self.discard_episode()
        self.store._writer_active = False

    @property
    def frames_in_episode(self) -> int:
        return self._frames

    def start_episode(
        self, instruction: str, *, env_id: str | None = None, seed: int | None = None, **fields: Any
    ) -> None:
        """Begin an episode. ``fields`` (JSON-serializable) are stored as the episode's ``extra``."""
        self.store._require_append("writing")
        if self._episode is not None:
            raise EpisodeStateError("an episode is already open: commit_episode() or discard_episode() first")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        try:
            extra = json.dumps(fields, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"episode fields must be JSON-serializable: {exc}") from exc
        self._episode = {
            "instruction": instruction,
            "env_id": env_id or "",
            "seed": layout.NO_SEED if seed is None else int(seed),
            "extra": extra,
        }
        self._frames = self._flushed = 0

    def add_frame(self, frame: Mapping[str, Any]) -> None:
        """Append one frame; a frame that does not match the schema raises FrameError, writing nothing."""
        if self._episode is None:
            raise EpisodeStateError("add_frame before start_episode")
        checked = check_frame(self.store.schema, frame, self._frames, self._episode["instruction"])
        for name, value in checked.items():
            self._buffers[name].append(value)
        self._frames += 1
        if self._frames - self._flushed >= self.flush_frames:
            self._flush()

    def _flush(self) -> None:
        pending = self._frames - self._flushed
        if pending == 0:
            return
        start = self.store.num_frames + self._flushed
        for name, rows in self._buffers.items():
            layout.append_rows(self.store.array(f"data/{name}"), start, np.stack(rows))
            rows.clear()
        self._flushed = self._frames

    def commit_episode(self, success: bool) -> int:
        """Write the open episode for good; returns its index."""
        if self._episode is None:
            raise EpisodeStateError("commit_episode with no episode open")
        if self._frames == 0:
            raise EpisodeStateError("cannot commit an episode with no frames (discard_episode() instead)")
        store = self.store
        self._flush()
        index, end = store.num_episodes, store.num_frames + self._frames
        numeric = {
            "episode_ends": end,
            "length": self._frames,
            "success": bool(success),
            "seed": self._episode["seed"],
        }
        for name, value in numeric.items():
            layout.append_rows(store.array(f"meta/{name}"), index, np.asarray([value]))
        for name in layout.TEXT_COLUMNS:
            ends = store.array(f"meta/{name}/ends")
            offset = int(ends[index - 1]) if index else 0
            data = np.frombuffer(self._episode[name].encode("utf-8"), dtype=np.uint8)
            layout.append_rows(store.array(f"meta/{name}/bytes"), offset, data)
            layout.append_rows(ends, index, np.asarray([offset + len(data)], dtype=np.int64))
        store._commit(index + 1, end)
        self._episode = None
        self._frames = self._flushed = 0
        return index

    def discard_episode(self) -> None:
        """Drop the open episode: nothing of it stays in the store."""
        if self._episode is None:
            raise EpisodeStateError("discard_episode with no episode open")
        for rows in self._buffers.values():
            rows.clear()
        if self._flushed:
            for name in self._buffers:
                array = self.store.array(f"data/{name}")
                array.resize((self.store.num_frames, *array.shape[1:]))
        self._episode = None
        self._frames = self._flushed = 0
