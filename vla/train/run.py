"""Setting a run up: device, seeds, run directory, store, normalization, tokenizers, model, loaders.

:func:`prepare_run` returns a :class:`RunData` holding everything :func:`vla.train.loop.train` needs
and the JSON documents every checkpoint of the run carries.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from vla.features import ACTION_KEY, STATE_KEY, camera_name
from vla.normalization import Normalizer
from vla.train import checkpoint as ckpt
from vla.train.batching import Collator
from vla.train.config import TrainConfig
from vla.train.distributed import DistInfo
from vla.train.sampler import StepBatchSampler
from vla.train.setup import (
    DataFeatures,
    action_windows,
    build_normalizer,
    check_same_features,
    dataclass_fields,
    model_config_dict,
    read_features,
    store_stats,
)

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker seeding: derive numpy/python seeds from the torch seed the loader assigned."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def run_directory(cfg: DictConfig, dist_info: DistInfo) -> Path:
    """``out=<dir>``, or ``runs/<dataset>-<policy>-<timestamp>`` (timestamp agreed on by every rank)."""
    if cfg.get("out"):
        return Path(str(cfg.out))
    stamp = torch.tensor([int(time.time())], dtype=torch.int64)
    if dist_info.enabled:
        torch.distributed.broadcast(stamp, src=0)
    dataset = cfg.get("dataset", {}).get("name") or Path(str(cfg.get("store", "store"))).name
    policy = cfg.get("policy", {}).get("name", "policy")
    when = time.strftime("%Y%m%d-%H%M%S", time.gmtime(int(stamp.item())))
    return Path(str(cfg.get("runs_dir", "runs"))) / f"{dataset}-{policy}-{when}"


def store_path(cfg: DictConfig) -> str:
    """``store=<path>`` wins over the dataset config's ``out``."""
    if cfg.get("store"):
        return str(cfg.store)
    dataset = cfg.get("dataset")
    if dataset is None or not dataset.get("out"):
        raise ValueError("no training data: give dataset=<name> (whose config has `out:`) or store=<path>")
    return str(dataset.out)


@dataclass
class RunData:
    """Everything the loop needs, built once per run."""

    train_config: TrainConfig
    model: torch.nn.Module
    documents: dict[str, Any]
    resume_from: Path | None
    train_loader: Callable[..., DataLoader]
    val_loader: Callable[[], DataLoader]
    has_validation: bool
    epoch_of: Callable[[int], int]


def _plain(node: Any) -> dict[str, Any]:
    """A config section as a plain dict (None -> {})."""
    if node is None:
        return {}
    return dict(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)


def _tokenizer_choice(value: Any) -> tuple[str, dict[str, Any]]:
    """``action_tokenizer: binning`` or ``action_tokenizer: {name: fast, scale: 10, ...}``."""
    if isinstance(value, str):
        return value, {}
    options = _plain(value)
    return str(options.pop("name", "binning")), options


def _train_sections(cfg: DictConfig) -> tuple[TrainConfig, list[str]]:
    return TrainConfig.from_sections(_plain(cfg.get("policy", {}).get("train")), _plain(cfg.get("train")))


def _fresh_documents(
    cfg: DictConfig, store: Any, features: DataFeatures, tc: TrainConfig, stats: Any, train_eps: list[int]
) -> dict[str, Any]:
    """Fit normalization and tokenizers on the training episodes; build every checkpoint document."""
    from vla.model.action_tokenizers import make_action_tokenizer
    from vla.model.model import VLAConfig
    from vla.model.text_tokenizer import TextTokenizer

    policy = cfg.get("policy", {})
    model_section = _plain(policy.get("model"))
    normalizer = build_normalizer(stats)
    defaults = VLAConfig()
    horizon = tc.horizon or model_section.get("horizon") or defaults.horizon
    # One read of the whole (small) action column beats one read per episode on large stores.
    all_actions = np.asarray(store.array(f"data/{ACTION_KEY}")[: store.num_frames])
    ends = store.episode_ends()
    actions = [all_actions[(ends[e - 1] if e else 0) : ends[e]] for e in train_eps]
    chunks = action_windows(actions, int(horizon), tc.tokenizer_fit_windows, tc.seed)
    tokenizer_name, tokenizer_options = _tokenizer_choice(policy.get("action_tokenizer", "binning"))
    action_tokenizer = make_action_tokenizer(tokenizer_name, **tokenizer_options)
    action_tokenizer.fit(normalizer.normalize(ACTION_KEY, chunks))
    metas = store.episodes_meta()
    text_tokenizer = TextTokenizer.build([metas[e].instruction for e in train_eps])
    model_cfg = model_config_dict(
        model_section, features, tc, text_tokenizer.vocab_size, action_tokenizer.vocab_size,
        action_tokenizer.max_tokens, dataclass_fields(VLAConfig),
    )  # fmt: skip
    model_cfg = VLAConfig.from_dict(model_cfg).to_dict()
    return {
        "config": {
            "run": OmegaConf.to_container(cfg, resolve=True),
            "model": model_cfg,
            "train": tc.to_dict(),
            # The chunk-aware order interleaves one stream per worker; a resumed run keeps this
            # number even with another train.num_workers, so its data order stays the same.
            "order_streams": tc.num_workers,
        },
        "normalization": normalizer.to_dict(),
        "action_tokenizer": action_tokenizer.state_dict(),
        "text_tokenizer": text_tokenizer.to_dict(),
        "policy": {
            "camera_keys": list(features.camera_keys),
            "image_shape": list(features.image_shape),
            "state_dim": features.state_dim,
            "action_dim": features.action_dim,
            "state_names": features.state_names,
            "action_names": features.action_names,
            "n_obs_steps": model_cfg["n_obs_steps"],
            "chunk_size": model_cfg["horizon"],
            "fps": features.fps,
            "features": features.shapes(),
        },
    }


def prepare_run(cfg: DictConfig, run_dir: Path, dist_info: DistInfo, device: torch.device) -> RunData:
    """Open the data, fit or restore normalization and tokenizers, build the model and loaders."""
    from vla.data.dataset import TrajectoryDataset, split_episodes
    from vla.data.store import TrajectoryStore
    from vla.data.windows import WindowSpec
    from vla.model.action_tokenizers import action_tokenizer_from_state_dict
    from vla.model.model import VLA, VLAConfig
    from vla.model.text_tokenizer import TextTokenizer

    tc, defaulted = _train_sections(cfg)
    if dist_info.is_main and defaulted:
        log.info("train settings left at their defaults: %s", ", ".join(defaulted))
    resume_from = _resume_checkpoint(cfg, run_dir)
    store = TrajectoryStore.open(store_path(cfg), mode="r")
    stats = store_stats(store)
    train_eps, val_eps = split_episodes(store.num_episodes, tc.val_fraction, tc.seed)
    train_eps, val_eps = [int(e) for e in train_eps], [int(e) for e in val_eps]
    if resume_from is not None:
        documents = ckpt.load_documents(resume_from)
        features = read_features(store, [camera_name(k) for k in documents["policy"]["camera_keys"]])
        check_same_features(documents["policy"], features, f"store {store.path}")
        Normalizer.from_dict(documents["normalization"]).check_matches(stats, f"store {store.path}")
        documents["config"]["train"] = tc.to_dict()  # e.g. more steps; the model stays as saved
    else:
        cameras = cfg.get("policy", {}).get("model", {}).get("cameras")
        features = read_features(store, list(cameras) if cameras else None)
        documents = _fresh_documents(cfg, store, features, tc, stats, train_eps)
    normalizer = Normalizer.from_dict(documents["normalization"])
    action_tokenizer = action_tokenizer_from_state_dict(documents["action_tokenizer"])
    text_tokenizer = TextTokenizer.from_dict(documents["text_tokenizer"])
    model_cfg = VLAConfig.from_dict(dict(documents["config"]["model"]))
    seed_everything(tc.seed)  # identical initial weights on every rank
    model = VLA(model_cfg).to(device)

    spec = WindowSpec(
        n_obs_steps=model_cfg.n_obs_steps, horizon=model_cfg.horizon,
        observation_keys=[*features.camera_keys, STATE_KEY], action_key=ACTION_KEY,
    )  # fmt: skip
    collator = Collator(
        features.camera_keys, normalizer, text_tokenizer, model_cfg.max_text_len, action_tokenizer
    )
    train_set = TrajectoryDataset(store.path, spec, episodes=train_eps)
    val_set = TrajectoryDataset(store.path, spec, episodes=val_eps) if val_eps else None
    streams = int(documents["config"].get("order_streams", tc.num_workers))
    order_fn = _order_fn(train_set, tc.batch_size * dist_info.world_size, streams)
    probe = StepBatchSampler(len(train_set), tc.batch_size, seed=tc.seed, end_step=0,
                             world_size=dist_info.world_size, order_fn=order_fn)  # fmt: skip
    loader_options: dict[str, Any] = {
        "collate_fn": collator,
        "num_workers": tc.num_workers,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": seed_worker,
    }
    if tc.num_workers > 0:
        # zarr runs an event-loop thread; forking a process with live threads can deadlock.
        loader_options.update(multiprocessing_context="forkserver", prefetch_factor=4)

    def train_loader(start_step: int) -> DataLoader:
        sampler = StepBatchSampler(
            len(train_set), tc.batch_size, seed=tc.seed, start_step=start_step, end_step=tc.steps,
            rank=dist_info.rank, world_size=dist_info.world_size, order_fn=order_fn,
        )  # fmt: skip
        generator = torch.Generator().manual_seed(tc.seed * 1000 + dist_info.rank)
        return DataLoader(train_set, batch_sampler=sampler, generator=generator, **loader_options)

    def val_loader() -> DataLoader:
        assert val_set is not None
        order = np.random.default_rng([tc.seed, 99]).permutation(len(val_set))
        subset = torch.utils.data.Subset(val_set, order[: tc.val_batches * tc.batch_size].tolist())
        # In-process: a few batches do not pay for starting worker processes at every validation.
        options = {**loader_options, "num_workers": 0}
        options.pop("multiprocessing_context", None)
        options.pop("prefetch_factor", None)
        generator = torch.Generator().manual_seed(tc.seed)
        return DataLoader(subset, batch_size=tc.batch_size, generator=generator, **options)

    return RunData(
        train_config=tc, model=model, documents=documents, resume_from=resume_from,
        train_loader=train_loader, val_loader=val_loader, has_validation=val_set is not None and len(val_set) > 0,
        epoch_of=probe.epoch_of,
    )  # fmt: skip


def _order_fn(dataset: Any, global_batch: int, num_workers: int) -> Callable[[int, int], np.ndarray]:
    """The store's chunk-aware order (vla.data.sampler), a pure function of (seed, epoch)."""
    from vla.data.sampler import ChunkAwareSampler

    sampler = ChunkAwareSampler(dataset, batch_size=global_batch, num_workers=num_workers)

    def order(seed: int, epoch: int) -> np.ndarray:
        sampler.seed = seed
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(dataset))

    return order


def _resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``resume=<dir>`` (a checkpoint or run directory), else the run directory's latest checkpoint."""
    if cfg.get("resume"):
        return ckpt.resolve_checkpoint(str(cfg.resume))
    return ckpt.latest_checkpoint(run_dir)
