"""Export a checkpoint's chunk prediction as one ``torch.export`` or TorchScript program.

    vla export checkpoint=<dir> out=<dir> [format=torch.export|torchscript]

The exported program is the whole model side of :meth:`vla.policies.runtime.Policy.predict_chunks`:
the observation encoder (``VLA.embed_prefix``), the prefill and the KV-cached greedy decoding of the
action tokens, with the batch dimension dynamic. Its inputs and outputs, positionally::

    images       float32 (B, T, N_cam, 3, H, W) in [0, 1]   (uint8 frames / 255, cameras in spec order)
    state        float32 (B, T, D)   normalized with normalization.json (mean/std)
    obs_is_pad   bool    (B, T)      True for padded history steps (T = n_obs_steps, newest last)
    text_tokens  int64   (B, L)      text_tokenizer.json ids, BOS first, PAD=0, L = max_text_len
    text_is_pad  bool    (B, L)
    -> tokens    int64   (B, num_tokens)   decoded with action_tokenizer.json, un-normalized with
                                           normalization.json (see vla.model.action_tokenizers)

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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

MANIFEST = "export.json"
INPUT_NAMES = ("images", "state", "obs_is_pad", "text_tokens", "text_is_pad")
EXPORT_VERSION = 1


class ExportError(RuntimeError):
    """The model could not be exported, or the exported program does not reproduce it."""


def prefill_mask(rank: Tensor, valid: Tensor) -> Tensor:
    """(B, 1, P+1, P+1) mask of the prefix plus BOS: what ``VLA.attention_mask(rank, valid, 1)`` gives,
    built without reading ``rank.max()`` as a Python int (a data-dependent value export cannot trace).
    BOS ranks above every prefix token, so it sees all valid prefix keys and no prefix token sees it."""
    B, P = valid.shape
    prefix = (rank[None, :] <= rank[:, None])[None] & valid[:, None, :]  # (B, P, P)
    top = torch.cat([prefix, prefix.new_zeros(B, P, 1)], dim=2)
    bos_row = torch.cat([valid, valid.new_ones(B, 1)], dim=1)[:, None, :]
    eye = torch.eye(P + 1, dtype=torch.bool, device=valid.device)
    return (torch.cat([top, bos_row], dim=1) | eye).unsqueeze(1)


class GreedyChunkDecoder(nn.Module):
    """``VLA.generate(obs, num_tokens, temperature=0, use_cache=True, ...)`` as a static-shape graph.

    Mirrors :class:`vla.model.generation._CachedDecoder` with two export-friendly differences: the
    prefix-padding mask is always applied (never skipped after a data-dependent test) and EOS ends a
    row by masking instead of breaking the loop, so every call runs ``num_tokens`` steps.
    """

    def __init__(
        self,
        model: nn.Module,
        num_tokens: int,
        suppress_tokens: Sequence[int] | None = None,
        eos_token: int | None = None,
        pad_token: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.num_tokens = int(num_tokens)
        self.eos_token = eos_token
        self.fill = pad_token if pad_token is not None else (eos_token if eos_token is not None else 0)
        self.register_buffer(
            "suppress", torch.tensor(sorted(set(suppress_tokens or ())), dtype=torch.long), persistent=False
        )

    def forward(
        self, images: Tensor, state: Tensor, obs_is_pad: Tensor, text_tokens: Tensor, text_is_pad: Tensor
    ) -> Tensor:
        model, config = self.model, self.model.config
        obs = dict(zip(INPUT_NAMES, (images, state, obs_is_pad, text_tokens, text_is_pad), strict=True))
        prefix, rank, valid = model.embed_prefix(obs)
        B, P, _ = prefix.shape
        # One buffer per layer (not views of one tensor): the exported graph writes them in place.
        caches = [prefix.new_zeros(B, P + self.num_tokens, 2 * config.n_embd) for _ in range(config.n_layer)]
        x = torch.cat([prefix, model.bos_embedding(B)], dim=1)
        mask = prefill_mask(rank, valid)
        for block, cache in zip(model.blocks, caches, strict=True):
            x = block(x, mask, cache, 0)
        key_mask = torch.cat([valid, valid.new_ones(B, self.num_tokens)], dim=1)[:, None, None, :]
        logits = model.head(model.ln_f(x[:, -1]))
        done = torch.zeros(B, dtype=torch.bool, device=prefix.device)
        tokens: list[Tensor] = []
        for i in range(self.num_tokens):
            if i:
                x = model.embed_actions(tokens[-1][:, None], i)
                for block, cache in zip(model.blocks, caches, strict=True):
                    x = block(x, key_mask[..., : P + i + 1], cache, P + i)
                logits = model.head(model.ln_f(x[:, -1]))
            if self.suppress.numel():
                logits = logits.index_fill(1, self.suppress, float("-inf"))
            chosen = logits.argmax(dim=-1)
            if self.eos_token is not None:
                chosen = torch.where(done, torch.full_like(chosen, self.fill), chosen)
                done = done | (chosen == self.eos_token)
            tokens.append(chosen)
        return torch.stack(tokens, dim=1)


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
    size; any difference in the predicted tokens raises :class:`ExportError`. Returns ``out_dir``.
    """
    from vla.policies.runtime import load_policy
    from vla.train import checkpoint as ckpt

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {sorted(FORMATS)}")
    source = ckpt.resolve_checkpoint(checkpoint_dir)
    policy = load_policy(source, device="cpu")
    options = policy.action_tokenizer.generation_options()
    num_tokens = int(options.pop("num_tokens"))
    decoder = GreedyChunkDecoder(
        policy.model,
        num_tokens,
        options.get("suppress_tokens"),
        options.get("eos_token"),
        options.get("pad_token"),
    )
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
        expected = policy.model.generate(dict(zip(INPUT_NAMES, check, strict=True)), num_tokens, **options)
        got = load(out / filename)(*check)
    if not torch.equal(got, expected):
        raise ExportError(f"the {format} program of {source} predicts other tokens than the eager model")
    for filename_json in ckpt.JSON_FILES.values():
        shutil.copyfile(source / filename_json, out / filename_json)
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

    def generate(self, obs: dict[str, Tensor], num_tokens: int, **_: Any) -> Tensor:
        """Greedy tokens; the decoding options were fixed at export time from the same tokenizer."""
        if num_tokens != self.num_tokens:
            raise ValueError(
                f"the exported program decodes {self.num_tokens} tokens, {num_tokens} were asked"
            )
        return self.program(*(obs[name] for name in INPUT_NAMES))


def load_exported_policy(export_dir: str | os.PathLike[str], **policy_options: Any) -> Any:
    """An exported directory as a CPU :class:`~vla.policies.runtime.Policy` (``policy_options``:
    ``replan_every``, ``temporal_ensemble``, ``max_age_s``)."""
    from vla.policies.runtime import Policy, read_policy_documents
    from vla.train import checkpoint as ckpt

    path = Path(export_dir)
    manifest = ckpt.read_json(path / MANIFEST)
    if manifest.get("format") not in FORMATS or manifest.get("version") != EXPORT_VERSION:
        raise ckpt.CheckpointError(
            f"{path / MANIFEST}: format {manifest.get('format')!r} version {manifest.get('version')!r} "
            f"is not one this vla reads (formats {sorted(FORMATS)}, version {EXPORT_VERSION})"
        )
    parts = read_policy_documents(path, f"export {path}")
    program_path = path / str(manifest["program"])
    if not program_path.is_file():
        raise ckpt.CheckpointError(f"export {path} is incomplete: {manifest['program']} is missing")
    program = FORMATS[manifest["format"]][2](program_path)
    model = ExportedModel(program, parts.model_config, int(manifest["num_tokens"]))
    return Policy(model, parts.spec, parts.normalizer, parts.action_tokenizer, parts.text_tokenizer,
                  device=torch.device("cpu"), **policy_options)  # fmt: skip


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by :func:`export_policy`."""
    return (Path(path) / MANIFEST).is_file()


def main(argv: Sequence[str] | None = None) -> int:
    """``vla export checkpoint=<dir> out=<dir> [format=torch.export|torchscript]``."""
    options: dict[str, str] = {}
    for arg in argv or []:
        key, sep, value = arg.partition("=")
        if not sep or key not in {"checkpoint", "out", "format"}:
            raise SystemExit(f"vla export: bad argument {arg!r}; expected checkpoint=, out=, format=")
        options[key] = value
    if "checkpoint" not in options or "out" not in options:
        raise SystemExit(f"usage: vla export checkpoint=<dir> out=<dir> [format={'|'.join(FORMATS)}]")
    out = export_policy(options["checkpoint"], options["out"], format=options.get("format", "torch.export"))
    print(f"vla export: wrote {out} (checked against the eager model)", file=sys.stderr)
    print(json.dumps(json.loads((out / MANIFEST).read_text()), indent=2))
    return 0
