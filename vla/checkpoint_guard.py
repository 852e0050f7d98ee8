"""What a checkpoint may make its loader do: read files inside it, and build a model its weights fit.

A checkpoint (or an export) is data someone handed over; loading it must not run code from
elsewhere nor allocate what its weights do not hold:

- Every file a checkpoint names (a ``pretrained:<path>`` encoder in the model config, an export's
  program, the ``latest`` pointer's target) resolves, symlinks followed, inside the checkpoint's
  directory, unless the user passed that very path explicitly (``trusted``). :func:`save_checkpoint
  <vla.checkpoint.save_checkpoint>` copies the encoder files a model uses into the
  checkpoint (:func:`bundle_model_files`), so a checkpoint is self-contained.
- The model's sizes come from ``config.json``. Before the real model is built, the model that
  config describes is built on the ``meta`` device (no memory) and every tensor shape is compared
  with the weights file's header (read without loading the tensors); the meta build itself stops
  as soon as it holds clearly more parameters than the file. This stays correct whatever fields the
  model config gains: the model code itself says which shapes a config implies. (Which tensors
  exist is checked by the strict load that follows: safetensors stores a tied weight once.)

Every refusal is a :class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

# Model config values "<kind>:<path>" whose path is a file loaded (and run) when the model is built.
FILE_KINDS = ("pretrained",)
BUNDLE_DIR = "files"  # where save_checkpoint copies those files, inside the checkpoint


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, tampered with or does not fit; the message names the file."""


def confined_file(
    base: Path, name: str | os.PathLike[str], what: str, trusted: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """``base / name`` resolved (symlinks followed); refused unless inside ``base`` or in ``trusted``.

    ``what`` names the field that holds ``name`` in the error ("config.json model.vision_encoder").
    """
    root = Path(base).resolve()
    target = (root / Path(name)).resolve()
    if target == root or root in target.parents:
        return target
    if target in {Path(p).resolve() for p in trusted}:
        return target
    raise CheckpointError(
        f"{what} names {str(name)!r}, which resolves to {target}, outside {root}: a checkpoint may only "
        "name files inside its own directory (pass that file explicitly to trust it)"
    )


def _file_references(model_cfg: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(field, kind, path)`` of every model config value that names a file."""
    for key, value in model_cfg.items():
        if isinstance(value, str) and ":" in value:
            kind, _, path = value.partition(":")
            if kind in FILE_KINDS:
                yield key, kind, path


def resolve_model_files(
    model_cfg: Mapping[str, Any], checkpoint: Path, trusted: Iterable[str | os.PathLike[str]] = ()
) -> dict[str, Any]:
    """``model_cfg`` with every file it names resolved inside ``checkpoint`` (absolute paths)."""
    resolved = dict(model_cfg)
    for key, kind, path in _file_references(model_cfg):
        where = confined_file(checkpoint, path, f"{checkpoint / 'config.json'}: model.{key}", trusted)
        resolved[key] = f"{kind}:{where}"
    return resolved


def bundle_model_files(model_cfg: Mapping[str, Any], checkpoint: Path) -> dict[str, Any]:
    """Copy the files ``model_cfg`` names into ``checkpoint/files/`` and name them relatively there."""
    bundled = dict(model_cfg)
    for key, kind, path in _file_references(model_cfg):
        source = Path(path)
        if not source.is_file():
            raise CheckpointError(
                f"model.{key} names {path!r}, which is not a file: cannot save it in the checkpoint"
            )
        relative = Path(BUNDLE_DIR) / f"{key}{''.join(source.suffixes)}"
        (checkpoint / BUNDLE_DIR).mkdir(exist_ok=True)
        shutil.copyfile(source, checkpoint / relative)
        bundled[key] = f"{kind}:{relative.as_posix()}"
    return bundled


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for damaged headers
        raise CheckpointError(f"cannot read the tensor list of {path}: {exc}") from exc


class _OverBudget(Exception):
    """The model being built holds more parameters than its weights file."""


@contextmanager
def _parameter_budget(count: int, numel: int) -> Iterator[None]:
    """Abort a model build as soon as it registers more parameters (or elements) than allowed.

    Building on the meta device allocates no memory, but a config asking for millions of layers
    would still create millions of modules before any shape could be compared.
    """
    seen = {"count": 0, "numel": 0}

    def hook(_module: torch.nn.Module, name: str, parameter: torch.nn.Parameter | None) -> None:
        if parameter is None:
            return
        seen["count"] += 1
        seen["numel"] += parameter.numel()
        if seen["count"] > count or seen["numel"] > numel:
            raise _OverBudget(
                f"{seen['count']} tensors of {seen['numel']} values before the build was stopped"
            )

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _int_fields(config: Any) -> dict[str, int]:
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    return {k: v for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool)}


def _fields_giving(config: Any, dims: set[int]) -> list[str]:
    """The config's integer fields whose value is one of ``dims`` (the likely culprits)."""
    return sorted(f"model.{k}={v}" for k, v in _int_fields(config).items() if v in dims)


def _fields_above(config: Any, largest: int) -> list[str]:
    """The config's integer fields larger than any dimension of any stored tensor (sizes no weight has)."""
    return sorted(f"model.{k}={v}" for k, v in _int_fields(config).items() if v > largest)


def check_weights_fit(build: Callable[[], torch.nn.Module], weights: Path, config: Any, what: str) -> None:
    """Raise :class:`CheckpointError` unless the model ``build()`` makes has the shapes of ``weights``.

    ``build`` is called on the meta device (nothing allocated) under a parameter budget taken from
    the file's header; ``config`` (the model config) is only used to name the fields behind a mismatch.
    """
    if not weights.is_file():
        raise CheckpointError(f"weights file {weights} is missing")
    check_shapes_fit(build, weight_shapes(weights), config, what, weights.name)


def check_shapes_fit(
    build: Callable[[], torch.nn.Module],
    stored: Mapping[str, tuple[int, ...]],
    config: Any,
    what: str,
    source: str,
) -> None:
    """:func:`check_weights_fit` against tensor shapes ``stored`` in ``source`` (a weights file, a program)."""
    total = sum(int(torch.Size(shape).numel()) for shape in stored.values())
    # Twice the file, plus slack: a tied weight is registered twice but stored once.
    budget = _parameter_budget(2 * len(stored) + 64, 2 * total + (1 << 20))
    with budget, torch.device("meta"):
        try:
            model = build()
        except _OverBudget as exc:
            largest = max((max(shape, default=0) for shape in stored.values()), default=0)
            fields = _fields_above(config, largest) or ["sizes"]
            raise CheckpointError(
                f"{what}: config.json {', '.join(fields)} asks for more parameters than {source} holds "
                f"({len(stored)} tensors of {total} values; {exc})"
            ) from None
        except CheckpointError:
            raise
        except Exception as exc:  # the model's own validation of the config
            raise CheckpointError(f"{what}: config.json describes no buildable model: {exc}") from exc
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if name in stored and tuple(stored[name]) != shape:
            differing = {m for m, f in zip(shape, stored[name], strict=False) if m != f} or set(shape)
            fields = _fields_giving(config, differing) or ["the model fields"]
            raise CheckpointError(
                f"{what}: config.json {', '.join(fields)} does not fit the weights: tensor {name!r} is "
                f"{list(stored[name])} in {source}, {list(shape)} for this config"
            )
