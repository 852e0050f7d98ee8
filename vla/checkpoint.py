"""The checkpoint format: plain directories of safetensors and JSON, written atomically, never pickled.

Training writes checkpoints; the policy runtime, evaluation and export read them. The format sits in
the layer below all of them (docs/ARCHITECTURE.md), so loading a policy never imports the training code.

Layout of ``<run>/checkpoints/step_<NNNNNNNN>/``::

    model.safetensors         training weights
    ema.safetensors           EMA weights (what load_policy uses)
    config.json               resolved run config: the composed config, model config, train config
    normalization.json        vla.normalization.Normalizer.to_dict()
    action_tokenizer.json     {"name": ..., "state": tokenizer.state_dict()}
    text_tokenizer.json       TextTokenizer.to_dict()
    policy.json               PolicySpec fields (cameras, shapes, names, n_obs_steps, chunk size, fps)
    train_state.safetensors   optimizer tensors and RNG states
    train_state.json          step, the code that wrote it (vla.code_version), optimizer
                              hyper-parameters, python RNG state, data position
    files/                    encoder files the model config names (``pretrained:files/...``)

``<run>/checkpoints/latest`` is a one-line text file naming the newest complete checkpoint. A
checkpoint is written into a hidden temporary directory and renamed into place, so a crash never
leaves a half-written ``step_*`` directory; only the last ``keep_last`` are kept.

Loading trusts nothing a checkpoint names (:mod:`vla.checkpoint_guard`): files resolve inside
the checkpoint, ``latest`` names a checkpoint of its own run, and sizes fit the weights.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from vla.checkpoint_guard import CheckpointError, bundle_model_files, resolve_model_files
from vla.code_version import code_version

CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
MODEL_FILE, EMA_FILE = "model.safetensors", "ema.safetensors"
STATE_TENSORS, STATE_JSON = "train_state.safetensors", "train_state.json"
# JSON documents every checkpoint holds (name -> file).
JSON_FILES = {
    "config": "config.json",
    "normalization": "normalization.json",
    "action_tokenizer": "action_tokenizer.json",
    "text_tokenizer": "text_tokenizer.json",
    "policy": "policy.json",
}
REQUIRED_FOR_INFERENCE = (EMA_FILE, *JSON_FILES.values())


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON: {exc}") from exc


# --- RNG and optimizer state as tensors + JSON ---------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG the training step touches (python, numpy, torch CPU, CUDA)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [version, list(py_state), py_gauss],
    }
    return tensors, meta


def restore_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    np_name, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    keys = tensors["rng.numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((np_name, keys, np_pos, np_has_gauss, np_gauss))
    version, py_state, py_gauss = meta["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and the rest (JSON)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- save / find / load ------------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    ema_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    documents: Mapping[str, Any],
    keep_last: int,
    extra_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it and prune old ones; return its path.

    ``documents`` holds one JSON-safe object per key of :data:`JSON_FILES`.
    """
    missing = [name for name in JSON_FILES if name not in documents]
    if missing:
        raise CheckpointError(f"cannot save a checkpoint without {missing}")
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / MODEL_FILE))
    save_model(ema_model, str(tmp / EMA_FILE))
    documents = dict(documents)
    config = documents["config"]
    if isinstance(config, Mapping) and isinstance(config.get("model"), Mapping):
        # Encoder files the model loads travel inside the checkpoint: loading never reads elsewhere.
        documents["config"] = {**config, "model": bundle_model_files(config["model"], tmp)}
    for name, filename in JSON_FILES.items():
        write_json(tmp / filename, documents[name])
    rng_tensors, rng_meta = rng_state()
    opt_tensors, opt_meta = optimizer_state(optimizer)
    save_file({**rng_tensors, **opt_tensors}, str(tmp / STATE_TENSORS))
    meta = {"step": step, "code": code_version(), "rng": rng_meta, "optimizer": opt_meta}
    write_json(tmp / STATE_JSON, {**meta, **(extra_state or {})})
    if final.exists():  # the same step saved twice (e.g. periodic + final): the new one wins
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, root / LATEST)
    prune(root, keep_last, keep=final.name)
    return final


def prune(root: Path, keep_last: int, keep: str) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (never ``keep``)."""
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep_last)]:
        if old.name != keep:
            shutil.rmtree(old)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``<run_dir>/checkpoints/latest`` names, or None if the run has none."""
    pointer = Path(run_dir) / CHECKPOINTS_DIR / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    # A checkpoint directory of this run, by its bare name: never a path leading elsewhere.
    if not name or Path(name).name != name or name.startswith("."):
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a checkpoint directory of {pointer.parent}"
        )
    target = pointer.parent / name
    if not target.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which does not exist")
    if target.resolve().parent != pointer.parent.resolve():
        raise CheckpointError(
            f"{pointer} names {name}, a link to {target.resolve()} outside {pointer.parent}"
        )
    return target


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Accept a checkpoint directory, a run directory or a ``checkpoints/`` directory."""
    path = Path(path)
    if (path / EMA_FILE).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    run_dir = path.parent if path.name == CHECKPOINTS_DIR else path
    if (found := latest_checkpoint(run_dir)) is not None:
        return found
    raise CheckpointError(
        f"{path} is neither a checkpoint (no {EMA_FILE}) nor a run directory with {CHECKPOINTS_DIR}/{LATEST}"
    )


def check_complete(checkpoint: Path, files: tuple[str, ...] = REQUIRED_FOR_INFERENCE) -> None:
    """Raise naming the first missing file."""
    for name in files:
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"checkpoint {checkpoint} is incomplete: {name} is missing")


def load_documents(checkpoint: Path, trusted: tuple[str | os.PathLike[str], ...] = ()) -> dict[str, Any]:
    """Every JSON document of a checkpoint, keyed as in :data:`JSON_FILES`.

    Files the model config names are resolved inside ``checkpoint`` (absolute paths in the returned
    config); one that resolves elsewhere raises :class:`CheckpointError` unless it is in ``trusted``
    (paths the user gave explicitly).
    """
    documents = {name: read_json(checkpoint / filename) for name, filename in JSON_FILES.items()}
    config = documents["config"]
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        config["model"] = resolve_model_files(config["model"], checkpoint, trusted)
    return documents


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file into ``module`` (strict: every missing or unexpected key is an error)."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} is missing")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except Exception as exc:  # safetensors raises several types for corrupt files and shape mismatches
        raise CheckpointError(f"cannot load weights {path}: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"weights {path} do not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_train_state(checkpoint: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer and RNG states; return the JSON training state (``step`` etc.)."""
    check_complete(checkpoint, (MODEL_FILE, STATE_TENSORS, STATE_JSON))
    tensors = load_file(str(checkpoint / STATE_TENSORS))
    meta = read_json(checkpoint / STATE_JSON)
    restore_optimizer_state(optimizer, tensors, meta["optimizer"])
    restore_rng_state(tensors, meta["rng"])
    return meta
