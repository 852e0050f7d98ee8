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

from vla import checkpoint as ckpt
from vla.data.dataset import episode_task
from vla.data.loader import StepBatchSampler, make_dataloader
from vla.features import ACTION_KEY, STATE_KEY, camera_name, kept_state_indices
from vla.inputs import Collator, text_positions
from vla.normalization import Normalizer
from vla.train.augment import WordDropout
from vla.train.config import TrainConfig
from vla.train.distributed import DistInfo
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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    word_dropout: WordDropout | None = None


def _plain(node: Any) -> dict[str, Any]:
    """A config section as a plain dict (None -> {})."""
    if node is None:
        return {}
    return dict(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)


def action_head_and_tokenizer(
    model_section: dict[str, Any], tokenizer_value: Any
) -> tuple[str, str, dict[str, Any]]:
    """``(action head, action tokenizer name, its options)`` from a policy config.

    The head (``model.action_head``) decides the tokenizer (``ar_bins``: binning, ``ar_fast``: FAST,
    ``flow`` / ``l1``: the continuous codec). ``action_tokenizer`` holds options per tokenizer
    (``{fast: {scale: 10, bpe_vocab_size: 1024}}``: only the chosen head's tokenizer reads its
    entry, so switching heads on the command line needs no other change); the older forms, a name
    (``binning``) or ``{name: fast, ...}``, still work and pick the matching token head when
    ``model.action_head`` is unset. A contradiction is an error naming both.
    """
    from vla.model.action_tokenizers import ACTION_TOKENIZERS
    from vla.model.heads import TOKENIZER_OF_HEAD

    named: str | None = None
    per_tokenizer: dict[str, Any] = {}
    if isinstance(tokenizer_value, str):
        named = tokenizer_value
    elif tokenizer_value is not None:
        options = _plain(tokenizer_value)
        if "name" in options:
            named = str(options.pop("name"))
            per_tokenizer = {named: options}
        else:
            per_tokenizer = options
    unknown = sorted(set(per_tokenizer) - set(ACTION_TOKENIZERS))
    if unknown:
        raise ValueError(
            f"action_tokenizer options for unknown tokenizers {unknown}; known: {sorted(ACTION_TOKENIZERS)}"
        )
    head = model_section.get("action_head")
    if head is None:
        head = {tok: h for h, tok in TOKENIZER_OF_HEAD.items() if h.startswith("ar_")}.get(named or "binning")
        if head is None:
            raise ValueError(
                f"action_tokenizer {named!r} has no token head; set the policy's model.action_head"
            )
    if head not in TOKENIZER_OF_HEAD:
        raise ValueError(f"unknown action_head {head!r}; choose one of {sorted(TOKENIZER_OF_HEAD)}")
    wanted = TOKENIZER_OF_HEAD[head]
    if named is not None and named != wanted:
        raise ValueError(
            f"policy model.action_head={head!r} uses the {wanted!r} action tokenizer, not {named!r}"
        )
    return head, wanted, _plain(per_tokenizer.get(wanted))


def _train_sections(cfg: DictConfig) -> tuple[TrainConfig, list[str]]:
    # vla.config puts the policy file's train: section at the top level, under the command line's.
    return TrainConfig.from_sections(_plain(cfg.get("train")))


def _replan_every(value: Any, horizon: int) -> int | None:
    """The policy's ``replan_every`` (None: the whole chunk), refused when a chunk cannot supply it."""
    if value is None:
        return None
    if not 1 <= int(value) <= horizon:
        raise ValueError(
            f"policy replan_every={value}: must be between 1 and the chunk's {horizon} actions (model.horizon)"
        )
    return int(value)


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
    horizon = model_section.get("horizon") or defaults.horizon
    # One read of the whole (small) action column beats one read per episode on large stores.
    all_actions = store.read_rows(ACTION_KEY)  # checked: a missing chunk is an error, never zeros
    ends = store.episode_ends()
    actions = [all_actions[(ends[e - 1] if e else 0) : ends[e]] for e in train_eps]
    chunks = action_windows(actions, int(horizon), tc.tokenizer_fit_windows, tc.seed)
    head, tokenizer_name, tokenizer_options = action_head_and_tokenizer(
        model_section, policy.get("action_tokenizer")
    )
    model_section["action_head"] = head
    action_tokenizer = make_action_tokenizer(tokenizer_name, **tokenizer_options)
    action_tokenizer.fit(normalizer.normalize(ACTION_KEY, chunks))
    metas = store.episodes_meta()
    # Unknown words are hidden, unless the known ones ground the instruction to one task's. An
    # episode recorded without a task name counts its instruction as its task: the env id alone
    # would make every instruction of that env one task, and grounding would then pick among them.
    text_tokenizer = TextTokenizer.build(
        [metas[e].instruction for e in train_eps],
        tasks=[
            episode_task(metas[e]) if metas[e].extra.get("task") else metas[e].instruction for e in train_eps
        ],
    )
    # Computed once: it warns about patterns that drop nothing, and both the model and the spec need it.
    state_indices = kept_state_indices(features.state_names, list(model_section.get("state_exclude") or ()))
    model_cfg = model_config_dict(
        model_section, features, text_tokenizer.vocab_size, action_tokenizer.vocab_size,
        action_tokenizer.max_tokens, dataclass_fields(VLAConfig), state_indices,
    )  # fmt: skip
    model_cfg = VLAConfig.from_dict(model_cfg).to_dict()
    return {
        "config": {
            "run": OmegaConf.to_container(cfg, resolve=True),
            "model": model_cfg,
            "train": tc.to_dict(),
            # The storage-locality order interleaves one stream per worker; a resumed run keeps this
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
            "state_indices": state_indices,
            "action_names": features.action_names,
            "n_obs_steps": model_cfg["n_obs_steps"],
            "chunk_size": model_cfg["horizon"],
            "replan_every": _replan_every(policy.get("replan_every"), int(model_cfg["horizon"])),
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
    state_indices = documents["policy"].get("state_indices")
    train_set = TrajectoryDataset(store.path, spec, episodes=train_eps, in_memory=tc.in_memory)
    # Every batch pads its instructions to the longest of the store's, not to max_text_len.
    text_len = text_positions(text_tokenizer, train_set.instructions, model_cfg.max_text_len)
    collator = Collator(
        features.camera_keys, normalizer, text_tokenizer, text_len, action_tokenizer, state_indices
    )
    val_set = TrajectoryDataset(store.path, spec, episodes=val_eps) if val_eps else None
    streams = int(documents["config"].get("order_streams", tc.num_workers))
    # Refuses a training set smaller than one global batch before anything starts.
    probe = StepBatchSampler(len(train_set), tc.batch_size, seed=tc.seed, end_step=0,
                             world_size=dist_info.world_size)  # fmt: skip

    def train_loader(start_step: int) -> DataLoader:
        return make_dataloader(
            train_set, tc.batch_size, steps=tc.steps, start_step=start_step, order=tc.order, seed=tc.seed,
            rank=dist_info.rank, world_size=dist_info.world_size, num_workers=tc.num_workers,
            order_streams=streams, collate_fn=collator, pin_memory=device.type == "cuda",
            curriculum_tasks=tc.curriculum_tasks, curriculum_steps=tc.curriculum_steps,
            task_weights=tc.task_weights,
        )  # fmt: skip

    def val_loader() -> DataLoader:
        assert val_set is not None
        order = np.random.default_rng([tc.seed, 99]).permutation(len(val_set))
        subset = torch.utils.data.Subset(val_set, order[: tc.val_batches * tc.batch_size].tolist())
        # A few fixed batches, in-process: validation does not pay for starting worker processes.
        generator = torch.Generator().manual_seed(tc.seed)
        return DataLoader(subset, batch_size=tc.batch_size, generator=generator, collate_fn=collator,
                          pin_memory=device.type == "cuda")  # fmt: skip

    word_dropout = None
    if tc.word_dropout:  # the training set has already read every episode's instruction and task
        word_dropout = WordDropout.build(
            tc.word_dropout, [train_set.instructions[e] for e in train_eps],
            [train_set.episode_tasks[e] for e in train_eps], text_tokenizer, text_len,
        )  # fmt: skip
    return RunData(
        train_config=tc, model=model, documents=documents, resume_from=resume_from,
        train_loader=train_loader, val_loader=val_loader, has_validation=val_set is not None and len(val_set) > 0,
        epoch_of=probe.epoch_of, word_dropout=word_dropout,
    )  # fmt: skip


def _resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``resume=<dir>`` (a checkpoint or run directory), else the run directory's latest checkpoint."""
    if cfg.get("resume"):
        return ckpt.resolve_checkpoint(str(cfg.resume))
    return ckpt.latest_checkpoint(run_dir)
