"""Observation encoders: camera images and instruction tokens -> sequences of ``n_embd`` vectors.

Two registries pick the encoder named in the config (``"kind"`` or ``"kind:argument"``):

- ``VISION_ENCODERS``: ``"patch"`` (ViT patch embedding, one linear map per ``patch_size`` square),
  ``"conv"`` (a small stride-2 conv stem ending on the same ``image_size / patch_size`` grid; with
  ``VLAConfig.film`` every stage is FiLM-modulated by the instruction, as in RT-1) and
  ``"pretrained:<path>"``: a local ``torch.export`` program (``.pt2``, exported with a dynamic batch
  dimension) or TorchScript file (``torch.jit.save``) mapping ImageNet-normalized
  images (N, 3, H, W) to a feature map (N, C, h, w) or tokens (N, P, C). It is frozen unless
  ``freeze_pretrained`` is false, and a trained linear map projects its features to ``n_embd``.
  Nothing is downloaded: export a backbone once (e.g. a torchvision ResNet with its last layers cut)
  and point the config at the file. The file must exist wherever the checkpoint is loaded.
- ``TEXT_ENCODERS``: ``"embedding"`` (a learned table over :mod:`vla.model.text_tokenizer` ids) and
  ``"pretrained:<path>"``: a local exported or TorchScript module mapping ``(tokens (B, L), is_pad (B, L))`` to
  features (B, L, C), e.g. a small exported language model used with its own tokenizer.

Images reach the encoders in [0, 1]; each encoder normalizes them itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from vla.model.model import VLAConfig

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _grid(config: VLAConfig) -> int:
    if config.image_size % config.patch_size:
        raise ValueError(
            f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
        )
    return config.image_size // config.patch_size


class PatchEncoder(nn.Module):
    """ViT patch embedding (Dosovitskiy et al., 2021) with learned patch positions."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        grid = _grid(config)
        self.proj = nn.Conv2d(3, config.n_embd, kernel_size=config.patch_size, stride=config.patch_size)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, config.n_embd) * 0.02)
        self.num_tokens = grid * grid

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, P, n_embd)."""
        x = self.proj(images * 2.0 - 1.0)  # centre pixel values; the conv learns the rest
        return x.flatten(2).transpose(1, 2) + self.pos


class ConvStemEncoder(nn.Module):
    """A stride-2 conv stem (Xiao et al., 2021, "Early convolutions help transformers see better")
    reaching the same ``image_size / patch_size`` grid as the patch encoder; ``patch_size`` must be a
    power of two.

    With ``config.film`` each stage's normalized features are scaled and shifted per channel by a
    linear map of an instruction vector (FiLM, Perez et al. 2018; RT-1 conditions its EfficientNet
    the same way). Why: a tiny transformer left to bind "red" to red pixels through attention alone
    needs far longer than a CPU budget allows; FiLM lets the very first conv layer become a detector
    of the named colour. The maps start at zero, so training starts from the unconditioned stem.
    """

    def __init__(self, config: VLAConfig):
        super().__init__()
        grid = _grid(config)
        stages = int(math.log2(config.patch_size))
        if 2**stages != config.patch_size:
            raise ValueError(
                f"the conv vision encoder needs a power-of-two patch_size, got {config.patch_size}"
            )
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.films = nn.ModuleList() if config.film else None
        channels = 3
        for i in range(stages):
            out = max(16, config.n_embd >> (stages - 1 - i))
            self.convs.append(nn.Conv2d(channels, out, 3, stride=2, padding=1))
            self.norms.append(nn.GroupNorm(1, out))
            if self.films is not None:
                self.films.append(nn.Linear(config.n_embd, 2 * out))
            channels = out
        self.out = nn.Conv2d(channels, config.n_embd, 1)
        self.act = nn.GELU()
        self.pos = nn.Parameter(torch.randn(1, grid * grid, config.n_embd) * 0.02)
        self.num_tokens = grid * grid
        self.reset_film()

    def reset_film(self) -> None:
        """Zero the FiLM maps: scale 1 and shift 0 for every instruction (the unconditioned stem).
        :class:`vla.model.model.VLA` calls it again after its own weight initialization."""
        for film in self.films or ():
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        """(N, 3, H, W) in [0, 1] and, with FiLM, one instruction vector per image (N, n_embd)."""
        if (condition is None) != (self.films is None):
            raise ValueError(
                "this conv stem " + ("needs" if self.films is not None else "takes no")
                + " an instruction vector (VLAConfig.film)"
            )  # fmt: skip
        x = images * 2.0 - 1.0
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = norm(conv(x))
            if self.films is not None:
                scale, shift = self.films[i](condition)[:, :, None, None].chunk(2, dim=1)
                x = x * (1.0 + scale) + shift
            x = self.act(x)
        return self.out(x).flatten(2).transpose(1, 2) + self.pos


def _load_local_module(path: str, what: str, frozen: bool) -> nn.Module:
    """A local ``torch.export`` program (``.pt2``) or TorchScript file, optionally frozen."""
    if not path:
        raise ValueError(f"a pretrained {what} encoder needs a path: 'pretrained:/path/to/module.pt2'")
    try:
        if path.endswith(".pt2"):
            module = torch.export.load(path).module()
        else:
            with warnings.catch_warnings():  # TorchScript still loads fine; its deprecation is noise here
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise ValueError(f"cannot load the pretrained {what} encoder from {path!r}: {exc}") from exc
    for parameter in module.parameters():
        parameter.requires_grad_(not frozen)
    return module


class PretrainedVisionEncoder(nn.Module):
    """A local TorchScript backbone (frozen by default) + a trained projection to ``n_embd``."""

    def __init__(self, config: VLAConfig, path: str):
        super().__init__()
        self.backbone = _load_local_module(path, "vision", config.freeze_pretrained)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            probe = self._features(torch.zeros(1, 3, config.image_size, config.image_size))
        self.num_tokens, channels = probe.shape[1], probe.shape[2]
        self.proj = nn.Linear(channels, config.n_embd)
        self.pos = nn.Parameter(torch.randn(1, self.num_tokens, config.n_embd) * 0.02)

    def _features(self, images: Tensor) -> Tensor:
        features = self.backbone((images - self.mean) / self.std)
        if features.dim() == 4:  # feature map (N, C, h, w) -> tokens (N, h*w, C)
            features = features.flatten(2).transpose(1, 2)
        if features.dim() != 3:
            raise ValueError(
                f"a pretrained vision encoder must return (N,C,h,w) or (N,P,C), got {tuple(features.shape)}"
            )
        return features

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(self._features(images)) + self.pos


class TokenEmbeddingText(nn.Module):
    """Learned embeddings of text-tokenizer ids plus learned positions."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.embed = nn.Embedding(config.text_vocab_size, config.n_embd)
        self.pos = nn.Parameter(torch.randn(1, config.max_text_len, config.n_embd) * 0.02)

    def forward(self, tokens: Tensor, is_pad: Tensor) -> Tensor:
        return self.embed(tokens) + self.pos[:, : tokens.shape[1]]


class InstructionPool(nn.Module):
    """Attention pooling of text features into one instruction vector per row (for FiLM).

    A learned query scores every token, so the pooled vector is dominated by the words that decide
    the task (the colour, the verb) and barely moved by filler words or unseen byte-spelled words
    from a held-out phrasing, which a plain mean would average in with equal weight."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(n_embd))
        self.norm = nn.LayerNorm(n_embd)

    def forward(self, text: Tensor, is_pad: Tensor) -> Tensor:
        """(B, L, D) features, (B, L) padding -> (B, D)."""
        scores = (text @ self.query) / text.shape[-1] ** 0.5
        weights = torch.softmax(scores.masked_fill(is_pad, float("-inf")), dim=1)
        return self.norm(torch.einsum("bl,bld->bd", weights, text))


class PretrainedTextEncoder(nn.Module):
    """A local TorchScript text encoder (frozen by default) + a trained projection to ``n_embd``."""

    def __init__(self, config: VLAConfig, path: str):
        super().__init__()
        self.backbone = _load_local_module(path, "text", config.freeze_pretrained)
        with torch.no_grad():
            probe_tokens = torch.zeros(1, config.max_text_len, dtype=torch.long)
            probe = self.backbone(probe_tokens, torch.zeros_like(probe_tokens, dtype=torch.bool))
        if probe.dim() != 3:
            raise ValueError(f"a pretrained text encoder must return (B, L, C), got {tuple(probe.shape)}")
        self.proj = nn.Linear(probe.shape[-1], config.n_embd)

    def forward(self, tokens: Tensor, is_pad: Tensor) -> Tensor:
        return self.proj(self.backbone(tokens, is_pad))


VISION_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "patch": PatchEncoder,
    "conv": ConvStemEncoder,
    "pretrained": PretrainedVisionEncoder,
}
TEXT_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "embedding": TokenEmbeddingText,
    "pretrained": PretrainedTextEncoder,
}


def build_encoder(
    registry: dict[str, Callable[..., nn.Module]], spec: str, config: VLAConfig, what: str
) -> nn.Module:
    """Build ``registry[kind](config[, argument])`` from ``spec = "kind"`` or ``"kind:argument"``."""
    kind, _, argument = spec.partition(":")
    if kind not in registry:
        raise ValueError(
            f"unknown {what} encoder {spec!r}; choose one of {sorted(registry)} ('pretrained:<path>')"
        )
    return registry[kind](config, argument) if kind == "pretrained" else registry[kind](config)
