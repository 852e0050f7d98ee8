"""Export a checkpoint's chunk prediction as one ``torch.export`` or TorchScript program.

    vla export checkpoint=<dir> out=<dir> [format=torch.export|torchscript]

The exported program is the whole model side of :meth:`vla.policies.runtime.Policy.predict_chunks`:
the observation encoder (``VLA.embed_prefix``), the prefill and the KV-cached decoding of the action
head (greedy tokens, one regression pass, or the flow head's Euler steps from its fixed starting
noise), with the batch dimension dynamic. It is the same decoder as eager inference
(:mod:`vla.model.decoding`, static form). Its inputs and outputs, positionally::

    images       float32 (B, T, N_cam, 3, H, W) in [0, 1]   (uint8 frames / 255, cameras in spec order)
    state        float32 (B, T, D)   normalized with normalization.json (mean/std)
    obs_is_pad   bool    (B, T)      True for padded history steps (T = n_obs_steps, newest last)
    text_tokens  int64   (B, L)      text_tokenizer.json ids, BOS first, PAD=0, L = max_text_len
    text_is_pad  bool    (B, L)      unknown words hidden, or the instruction grounded first (the
                                     table in text_tokenizer.json: vla.model.instruction_grounding)
    -> tokens    int64   (B, num_tokens)   token heads: decoded with action_tokenizer.json, un-normalized
                                           with normalization.json (see vla.model.action_tokenizers)
       or chunk  float32 (B, H, A)         continuous heads: the normalized chunk (un-normalize it)

Beside it the export directory holds the checkpoint's JSON documents (statistics, tokenizers, spec,
model config) and ``export.json`` (format, program file, input names, number of tokens). Running it
needs torch only (``torch.export.load(path).module()(*inputs)`` or ``torch.jit.load``);
:func:`load_exported_policy` wraps it back into a :class:`~vla.policies.runtime.Policy`, so input
checks, normalization, decoding and ``act()`` are the very same code as for the eager model.

ONNX is not offered: the ``onnx`` package is not part of the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vla import checkpoint as ckpt
from vla.checkpoint_guard import BUNDLE_DIR, check_shapes_fit, confined_file
from vla.cli_errors import cli_main
from vla.config_schema import choice, required

MANIFEST = "export.json"
INPUT_NAMES = ("images", "state", "obs_is_pad", "text_tokens", "text_is_pad")
EXPORT_VERSION = 1


class ExportError(RuntimeError):
    """The model could not be exported, or the exported program does not reproduce it."""


class ChunkDecoder(nn.Module):
    """The model side of ``Policy.predict_chunks`` as one module: the very decoder eager inference
    uses (:func:`vla.model.decoding.decode`), in its static form (no data-dependent control flow),
    with the decoding options fixed at export time from the checkpoint's action tokenizer."""

    def __init__(self, model: nn.Module, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.eval()
        self.options = dict(options)

    def forward(
        self, images: Tensor, state: Tensor, obs_is_pad: Tensor, text_tokens: Tensor, text_is_pad: Tensor
    ) -> Tensor:
        from vla.model.decoding import DecodeOptions, decode

        obs = dict(zip(INPUT_NAMES, (images, state, obs_is_pad, text_tokens, text_is_pad), strict=True))
        return decode(self.model, obs, DecodeOptions(**self.options, static=True))


def _save_torch_export(decoder: nn.Module, example: tuple[Tensor, ...], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(decoder, example, dynamic_shapes=tuple({0: batch} for _ in example))
    torch.export.save(program, str(path))


def _save_torchscript(decoder: nn.Module, example: tuple[Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():  # tracing warns about the unrolled loop and TorchScript's deprecation
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(decoder, example, check_trace=False)
    traced.save(str(path))


def _load_torch_export(path: Path) -> Callable[..., Tensor]:
    with warnings.catch_warnings():  # torch warns that the archive's weight buffers are read-only
        warnings.simplefilter("ignore", UserWarning)
        return torch.export.load(str(path)).module()


def _load_torchscript(path: Path) -> Callable[..., Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


# format -> (program file name, save(decoder, example inputs, path), load(path) -> callable).
FORMATS: dict[str, tuple[str, Callable[..., None], Callable[[Path], Callable[..., Tensor]]]] = {
    "torch.export": ("policy.pt2", _save_torch_export, _load_torch_export),
    "torchscript": ("policy.ts", _save_torchscript, _load_torchscript),
}


def example_inputs(config: Any, batch: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
    """Random model inputs of a :class:`~vla.model.model.VLAConfig` (positional, as :data:`INPUT_NAMES`)."""
    g = torch.Generator().manual_seed(seed)
    T, N, S, L = config.n_obs_steps, len(config.cameras), config.image_size, config.max_text_len
    obs_is_pad = torch.zeros(batch, T, dtype=torch.bool)
    obs_is_pad[0, : T - 1] = True  # one row with a padded history, as a short history gives
    text_is_pad = torch.zeros(batch, L, dtype=torch.bool)
    text_is_pad[:, L // 2 :] = True
    return (
        torch.rand(batch, T, N, 3, S, S, generator=g),
        torch.randn(batch, T, config.state_dim, generator=g),
        obs_is_pad,
        torch.randint(3, config.text_vocab_size, (batch, L), generator=g).masked_fill(text_is_pad, 0),
        text_is_pad,
    )


def export_policy(
    checkpoint_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, format: str = "torch.export"
) -> Path:
    """Export the checkpoint's chunk prediction (CPU, float32, dynamic batch) into ``out_dir``.

    The exported program is run once against the eager model on random inputs of another batch
    size; any difference in the predicted tokens (or, for a continuous head, an action differing by
    more than 1e-4) raises :class:`ExportError`. Returns ``out_dir``.
    """
    from vla.policies.runtime import load_policy

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {sorted(FORMATS)}")
    source = ckpt.resolve_checkpoint(checkpoint_dir)
    policy = load_policy(source, device="cpu")
    options = policy.action_tokenizer.generation_options()
    num_tokens = int(options["num_tokens"])
    decoder = ChunkDecoder(policy.model, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    filename, save, load = FORMATS[format]
    try:
        with torch.no_grad():
            save(decoder, example_inputs(policy.model.config, batch=2), out / filename)
    except Exception as exc:  # export raises many types; the message says which part failed
        raise ExportError(f"cannot export {source} as {format}: {type(exc).__name__}: {exc}") from exc
    check = example_inputs(policy.model.config, batch=3, seed=1)
    with torch.no_grad():
        expected = policy.model.generate(dict(zip(INPUT_NAMES, check, strict=True)), options)
        got = load(out / filename)(*check)
    same = (
        torch.equal(got, expected)
        if not expected.is_floating_point()
        else torch.allclose(got, expected, atol=1e-4)
    )
    if not same:
        raise ExportError(f"the {format} program of {source} predicts other actions than the eager model")
    for filename_json in ckpt.JSON_FILES.values():
        shutil.copyfile(source / filename_json, out / filename_json)
    if (source / BUNDLE_DIR).is_dir():  # encoder files config.json names, inside the export too
        shutil.copytree(source / BUNDLE_DIR, out / BUNDLE_DIR, dirs_exist_ok=True)
    manifest = {
        "version": EXPORT_VERSION, "format": format, "program": filename, "inputs": list(INPUT_NAMES),
        "outputs": ["tokens"], "num_tokens": num_tokens, "dynamic_batch": True, "device": "cpu",
        "torch": torch.__version__, "source": str(source),
    }  # fmt: skip
    ckpt.write_json(out / MANIFEST, manifest)
    return out


class ExportedModel:
    """The exported program behind the part of the ``VLA`` interface :class:`Policy` uses."""

    def __init__(self, program: Callable[..., Tensor], config: Any, num_tokens: int) -> None:
        self.program, self.config, self.num_tokens = program, config, num_tokens

    def eval(self) -> ExportedModel:
        return self

    def generate(self, obs: dict[str, Tensor], options: Any = None, **_: Any) -> Tensor:
        """The program's prediction; the decoding options were fixed at export time from the same
        tokenizer, so asking for another number of tokens is an error."""
        asked = (
            (options or {}).get("num_tokens", self.num_tokens)
            if isinstance(options, dict)
            else self.num_tokens
        )
        if asked != self.num_tokens:
            raise ValueError(f"the exported program decodes {self.num_tokens} tokens, {asked} were asked")
        return self.program(*(obs[name] for name in INPUT_NAMES))


def _check_program_fits(program: Any, config: Any, what: str, source: str) -> None:
    """The model config's sizes (``max_text_len`` sizes every text batch) must be the program's own."""
    from vla.model.model import VLA

    prefix = "model."  # the decoder module holds the model under this name
    shapes = {
        name[len(prefix) :]: tuple(tensor.shape)
        for name, tensor in program.state_dict().items()
        if name.startswith(prefix)
    }
    check_shapes_fit(lambda: VLA(config), shapes, config, what, source)


def load_exported_policy(export_dir: str | os.PathLike[str], **policy_options: Any) -> Any:
    """An exported directory as a CPU :class:`~vla.policies.runtime.Policy` (``policy_options``:
    ``replan_every``, ``temporal_ensemble``, ``max_age_s``)."""
    from vla.policies.runtime import Policy, read_policy_documents

    path = Path(export_dir)
    manifest = ckpt.read_json(path / MANIFEST)
    if manifest.get("format") not in FORMATS or manifest.get("version") != EXPORT_VERSION:
        raise ckpt.CheckpointError(
            f"{path / MANIFEST}: format {manifest.get('format')!r} version {manifest.get('version')!r} "
            f"is not one this vla reads (formats {sorted(FORMATS)}, version {EXPORT_VERSION})"
        )
    parts = read_policy_documents(path, f"export {path}")
    # The program is loaded and run: it must be the export's own file, never one named elsewhere.
    program_path = confined_file(path, str(manifest.get("program")), f"{path / MANIFEST}: field 'program'")
    if not program_path.is_file():
        raise ckpt.CheckpointError(f"export {path} is incomplete: {manifest['program']} is missing")
    program = FORMATS[manifest["format"]][2](program_path)
    _check_program_fits(program, parts.model_config, f"export {path}", program_path.name)
    model = ExportedModel(program, parts.model_config, int(manifest["num_tokens"]))
    return Policy(model, parts.spec, parts.normalizer, parts.action_tokenizer, parts.text_tokenizer,
                  device=torch.device("cpu"), **policy_options)  # fmt: skip


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by :func:`export_policy`."""
    return (Path(path) / MANIFEST).is_file()


@dataclass
class ExportCommand:
    """``vla export``'s keys (Hydra's override grammar, checked by :mod:`vla.config`)."""

    checkpoint: str = required("<dir>")
    out: str = required("<dir>")
    format: str = choice("torch.export", FORMATS)


@cli_main("export")
def main(argv: Sequence[str]) -> int:
    """``vla export checkpoint=<dir> out=<dir> [format=torch.export|torchscript]``."""
    from vla.config import compose_command

    cfg = compose_command("export", argv, ExportCommand)
    out = export_policy(cfg.checkpoint, cfg.out, format=cfg.format)
    print(f"vla export: wrote {out} (checked against the eager model)", file=sys.stderr)
    print(json.dumps(json.loads((out / MANIFEST).read_text()), indent=2))
    return 0
