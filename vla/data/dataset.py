"""``TrajectoryDataset``: a torch Dataset of training windows over a trajectory store.

Every frame of the selected episodes anchors one sample (see :mod:`vla.data.windows`). The store is
opened lazily in each process that reads (DataLoader workers included) and the dataset pickles as
its path and settings, so it works with fork, spawn and forkserver workers alike. Training reads it
through :func:`vla.data.loader.make_dataloader`, whose default order keeps storage locality (frames
that share a decoded storage chunk are drawn together: :mod:`vla.data.sampler`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vla.data.batch import WindowBatch, empty_batch_tensors
from vla.data.cache import DEFAULT_CACHE_BYTES, ArrayFrames, StoreFrames
from vla.data.store import TrajectoryStore
from vla.data.windows import WindowSpec, window_rows


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of episode indices into (train, val); both sorted, val non-empty when asked for."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if num_episodes < 0:
        raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
    order = np.random.default_rng(seed).permutation(num_episodes)
    num_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes >= 2:
        num_val = min(max(num_val, 1), num_episodes - 1)
    return sorted(order[num_val:].tolist()), sorted(order[:num_val].tolist())


def episode_task(meta: Any) -> str:
    """The task an episode was recorded for (:class:`vla.data.store.EpisodeMeta`): ``env_id/task``,
    either part alone when the other is missing, else the instruction."""
    parts = [str(part) for part in (meta.env_id, meta.extra.get("task")) if part]
    return "/".join(parts) or meta.instruction


class TrajectoryDataset(Dataset):
    """Training windows of ``store_or_path`` (a store, a local path or an fsspec URL).

    ``episodes`` restricts the samples to those episodes (e.g. from :func:`split_episodes`);
    ``cache_bytes`` bounds the decoded-chunk cache of each process; ``in_memory`` loads the
    needed features into RAM once (small stores only).
    """

    def __init__(
        self,
        store_or_path: TrajectoryStore | str | os.PathLike[str],
        spec: WindowSpec | None = None,
        episodes: Sequence[int] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        in_memory: bool = False,
    ) -> None:
        self.path = store_or_path.path if isinstance(store_or_path, TrajectoryStore) else str(store_or_path)
        self.spec = spec or WindowSpec()
        self.cache_bytes = int(cache_bytes)
        self.in_memory = in_memory
        store = (
            store_or_path if isinstance(store_or_path, TrajectoryStore) else TrajectoryStore.open(self.path)
        )
        features = store.schema.features
        if self.spec.action_key not in features:
            raise KeyError(f"action key {self.spec.action_key!r} is not a feature of {self.path}")
        keys = self.spec.observation_keys
        if keys is None:
            keys = tuple(k for k in features if k != self.spec.action_key)
        missing = [k for k in keys if k not in features]
        if missing:
            raise KeyError(f"observation keys {missing} are not features of {self.path} ({sorted(features)})")
        self.observation_keys: tuple[str, ...] = tuple(keys)
        self.num_store_frames = store.num_frames  # the committed view this dataset reads
        ends = store.episode_ends()
        self.episode_starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self.episode_stops = ends
        chosen = (
            np.arange(len(ends)) if episodes is None else np.asarray(sorted(set(episodes)), dtype=np.int64)
        )
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(ends)):
            raise IndexError(f"episodes must lie in [0, {len(ends)}), got {chosen.min()}..{chosen.max()}")
        self.episodes = chosen
        lengths = ends[chosen] - self.episode_starts[chosen]
        # One sample per frame: its global frame index and its episode.
        self.anchor_episode = np.repeat(chosen, lengths)
        self.anchor_frame = np.concatenate(
            [np.arange(self.episode_starts[e], ends[e]) for e in chosen] or [np.zeros(0, np.int64)]
        ).astype(np.int64)
        metas = store.episodes_meta()
        self.instructions = [m.instruction for m in metas]
        # Each episode's task: its env id and the task the recorder named in its metadata (one env id
        # such as "tabletop" holds every task of a suite); its instruction when it has neither.
        self.episode_tasks = [episode_task(m) for m in metas]
        image_storage_chunks = [
            (int(store.array(f"data/{k}").chunks[0]), features[k])
            for k in self._read_keys()
            if features[k].kind == "image"
        ]
        # Frames per storage chunk of the images (not a policy's action chunk).
        self.storage_chunk_frames = max((frames for frames, _ in image_storage_chunks), default=1024)
        # Bytes of one decoded storage chunk of each image feature read (the sampler sizes groups by them).
        sizes = [
            frames * int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
            for frames, spec in image_storage_chunks
        ]
        self.image_storage_chunk_bytes = sum(sizes)  # one storage chunk of every camera
        self.largest_image_storage_chunk_bytes = max(sizes, default=0)
        # (shape, torch dtype) of one row of each feature read, for the batch tensors
        self._arrays_meta = {
            k: (features[k].shape, torch.from_numpy(np.zeros(0, features[k].dtype)).dtype)
            for k in self._read_keys()
        }
        self._source: StoreFrames | ArrayFrames | None = None
        self._source_pid: int | None = None

    def _read_keys(self) -> tuple[str, ...]:
        return (*self.observation_keys, self.spec.action_key)

    def _open_source(self) -> StoreFrames | ArrayFrames:
        store = TrajectoryStore.open(self.path)
        if self.in_memory:
            # Rows are global frame indices: load up to the last frame the chosen episodes use.
            end = int(self.episode_stops[self.episodes].max()) if len(self.episodes) else 0
            return ArrayFrames({k: store.read_rows(k, 0, end) for k in self._read_keys()})
        return StoreFrames(store, self._read_keys(), self.cache_bytes, end=self.num_store_frames)

    @property
    def source(self) -> StoreFrames | ArrayFrames:
        """The frame source of this process, opened on first use (again after a fork)."""
        # In-memory arrays are read-only and survive a fork (workers share them copy-on-write);
        # a store source is reopened, as zarr's threads do not survive one.
        stale = self._source_pid != os.getpid() and not isinstance(self._source, ArrayFrames)
        if self._source is None or stale:
            self._source = self._open_source()
            self._source_pid = os.getpid()
        return self._source

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_source"] = state["_source_pid"] = None  # each process opens its own
        return state

    def __len__(self) -> int:
        return len(self.anchor_frame)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> WindowBatch:
        """The samples ``indices`` at once (torch's DataLoader calls this with a whole batch).

        All windows are computed together and each decoded storage chunk is visited once per batch;
        the result is already collated (see :class:`vla.data.batch.WindowBatch`).
        """
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        bad = (index < -n) | (index >= n)
        if bad.any():
            raise IndexError(f"sample {int(index[bad][0])} out of range ({n} samples)")
        index = index % max(n, 1)
        t = self.anchor_frame[index]
        episode = self.anchor_episode[index]
        start, stop = self.episode_starts[episode], self.episode_stops[episode]
        spec, source = self.spec, self.source
        obs_rows, obs_pad = window_rows(t, start, stop, spec.n_obs_steps, 1)
        act_rows, act_pad = window_rows(t, start, stop, 1, spec.horizon)
        rows_of = {key: obs_rows for key in self.observation_keys} | {spec.action_key: act_rows}
        layout = {key: ((*rows.shape, *self._arrays_meta[key][0]), self._arrays_meta[key][1])
                  for key, rows in rows_of.items()}  # fmt: skip
        size = len(index)
        layout |= {
            "observation_is_pad": (obs_pad.shape, torch.bool),
            "action_is_pad": (act_pad.shape, torch.bool),
            "episode_index": ((size,), torch.int64),
            "frame_index": ((size,), torch.int64),
        }
        batch = empty_batch_tensors(layout)
        for key, rows in rows_of.items():
            source.gather(key, rows, batch[key].numpy())
        batch["observation_is_pad"].numpy()[:] = obs_pad
        batch["action_is_pad"].numpy()[:] = act_pad
        batch["episode_index"].numpy()[:] = episode
        batch["frame_index"].numpy()[:] = t - start
        batch["instruction"] = [self.instructions[e] for e in episode.tolist()]
        return WindowBatch(batch)
