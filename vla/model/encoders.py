"""Observation encoders: camera images and instruction tokens -> sequences of ``n_embd`` vectors.

Two registries pick the encoder named in the config (``"kind"`` or ``"kind:argument"``):

- ``VISION_ENCODERS``: ``"patch"`` (ViT patch embedding, one linear map per ``patch_size`` square),
  ``"conv"`` (a small stride-2 conv stem ending on the same ``image_size / patch_size`` grid; with
  ``VLAConfig.film`` every stage is FiLM-modulated by the instruction, as in RT-1), ``"keypoints"``
  (the same FiLM-conditioned stem kept at a finer map and read out as ``VLAConfig.keypoints``
  spatial-softmax keypoint tokens: expected image coordinates plus attended features) and
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
from einops import rearrange
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
        return rearrange(x, "n d h w -> n (h w) d") + self.pos


class FilmConvStack(nn.Module):
    """3x3 convolutions, each followed by GroupNorm, optional FiLM and GELU.

    ``strides`` gives one conv per entry; channel widths start at ``widths[0]`` and follow ``widths``.
    A stride-1 conv that keeps its channel count is residual (ResNet's basic block, one conv deep):
    the stack can grow deeper without its early gradients fading.
    With ``film_dim`` every stage's normalized features are scaled and shifted per channel by a linear
    map of an instruction vector (FiLM, Perez et al. 2018; RT-1 conditions its EfficientNet the same
    way). Why: a tiny transformer left to bind "red" to red pixels through attention alone needs far
    longer than a CPU budget allows; FiLM lets the very first conv layer become a detector of the
    named colour. The maps start at zero, so training starts from the unconditioned stack.
    """

    def __init__(self, widths: list[int], strides: list[int], film_dim: int | None):
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.films = nn.ModuleList() if film_dim else None
        self.residual: list[bool] = []
        channels = 3
        for out, stride in zip(widths, strides, strict=True):
            self.residual.append(stride == 1 and out == channels)
            self.convs.append(nn.Conv2d(channels, out, 3, stride=stride, padding=1))
            self.norms.append(nn.GroupNorm(1, out))
            if self.films is not None:
                self.films.append(nn.Linear(film_dim, 2 * out))
            channels = out
        self.out_channels = channels
        self.act = nn.GELU()
        self.reset_film()
        # Channels-last (NHWC) weights and inputs: oneDNN's and cuDNN's fast layout. Measured on a
        # 2-core CPU (scripts/bench_model.py --layout), tiny128_deep trained 1.10x (eager) and 1.28x
        # (compiled) as many samples/s as in NCHW. The values are unchanged, only their order in
        # memory; checkpoints store them contiguous (safetensors' force_contiguous).
        self.convs.to(memory_format=torch.channels_last)

    def reset_film(self) -> None:
        """Zero the FiLM maps: scale 1 and shift 0 for every instruction (the unconditioned stack).
        :class:`vla.model.model.VLA` calls it again after its own weight initialization."""
        for film in self.films or ():
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        """(N, 3, H, W) in [0, 1] and, with FiLM, one instruction vector per image (N, film_dim)."""
        if (condition is None) != (self.films is None):
            raise ValueError(
                "this conv stem " + ("needs" if self.films is not None else "takes no")
                + " an instruction vector (VLAConfig.film)"
            )  # fmt: skip
        # The images take the weights' layout: channels-last (see __init__) unless the module was
        # converted back with .to(memory_format=torch.contiguous_format), e.g. for a benchmark.
        channels_last = self.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
        x = (images * 2.0 - 1.0).contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = norm(conv(x))
            if self.films is not None:
                scale, shift = self.films[i](condition)[:, :, None, None].chunk(2, dim=1)
                y = y * (1.0 + scale) + shift
            x = x + self.act(y) if self.residual[i] else self.act(y)
        return x


def _stride2_stages(config: VLAConfig) -> int:
    _grid(config)
    stages = int(math.log2(config.patch_size))
    if 2**stages != config.patch_size:
        raise ValueError(f"the conv vision encoders need a power-of-two patch_size, got {config.patch_size}")
    return stages


class ConvStemEncoder(nn.Module):
    """A stride-2 conv stem (Xiao et al., 2021, "Early convolutions help transformers see better")
    reaching the same ``image_size / patch_size`` grid as the patch encoder, one token per cell;
    ``patch_size`` must be a power of two. FiLM-conditioned on the instruction with ``config.film``.

    ``config.stem_blocks`` adds that many residual stride-1 convs after every stride-2 stage but the
    first: depth where the maps are small. Why there: the first stage, at half the image's
    resolution, already costs most of the stem (measured: doubling its width halved training
    throughput, while one residual conv after each later stage costs 14%).
    """

    def __init__(self, config: VLAConfig):
        super().__init__()
        grid = _grid(config)
        stages = _stride2_stages(config)
        widths, strides = [], []
        for i in range(stages):
            width = max(16, config.n_embd >> (stages - 1 - i))
            extra = config.stem_blocks if i > 0 else 0
            widths += [width] * (1 + extra)
            strides += [2] + [1] * extra
        self.stem = FilmConvStack(widths, strides, config.n_embd if config.film else None)
        self.out = nn.Conv2d(self.stem.out_channels, config.n_embd, 1)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, config.n_embd) * 0.02)
        self.num_tokens = grid * grid

    def reset_film(self) -> None:
        self.stem.reset_film()

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        """(N, 3, H, W) in [0, 1] (and the instruction vectors with FiLM) -> (N, P, n_embd)."""
        return rearrange(self.out(self.stem(images, condition)), "n d h w -> n (h w) d") + self.pos


_KEY_DIM = 32  # width of the keypoint encoder's per-cell keys and per-keypoint queries


class KeypointEncoder(nn.Module):
    """A FiLM-conditioned conv stem read out as ``config.keypoints`` spatial-softmax keypoints.

    The stem runs stride-2 stages down to the ``image_size / patch_size`` grid (``patch_size`` 4 keeps
    a 16x16 map of a 64x64 image), then one stride-1 stage that widens the receptive field. A 1x1
    conv gives a key per cell and each keypoint a query (shifted by the instruction with FiLM); the
    softmax of their products over the map yields the expected image
    coordinates (x, y) in [-1, 1] (Levine et al. 2016; Diffusion Policy's ResNet read-out) and the
    attended features. Each keypoint becomes one token: a linear map of ``[x, y, features]`` plus the
    keypoint's own embedding. Why: the tasks need object positions to about a centimetre, a few
    pixels; a coarse grid of tokens hands the transformer cells, a keypoint hands it coordinates, and
    FiLM lets a map follow "the object the instruction names".
    """

    def __init__(self, config: VLAConfig):
        super().__init__()
        if config.keypoints < 1:
            raise ValueError(
                f"the keypoints vision encoder needs VLAConfig.keypoints >= 1, got {config.keypoints}"
            )
        stages = _stride2_stages(config)
        width = config.stem_width or 16
        widths = [width << i for i in range(stages)] + [width << stages]
        self.stem = FilmConvStack(widths, [2] * stages + [1], config.n_embd if config.film else None)
        # Map scores: a query per keypoint against a key per cell (content-based, like attention).
        # With FiLM the queries are also shifted by a linear map of the instruction, so "the red
        # block" can pick red-block cells directly (zero-initialized: training starts unconditioned).
        self.keys = nn.Conv2d(self.stem.out_channels, _KEY_DIM, 1)
        self.queries = nn.Parameter(torch.randn(config.keypoints, _KEY_DIM) * _KEY_DIM**-0.5)
        self.query_film = nn.Linear(config.n_embd, config.keypoints * _KEY_DIM) if config.film else None
        # Log sharpness of the softmax over standardized map scores (see forward). It starts soft
        # (exp(0) = 1: every cell keeps some weight, so a map can still move to what the loss
        # needs; measured: started at 4.5 the maps locked onto the brightest object, the white
        # plate, for every instruction) and sharpens as it learns.
        self.temperature = nn.Parameter(torch.zeros(1))
        self.proj = nn.Linear(2 + self.stem.out_channels, config.n_embd)
        self.pos = nn.Parameter(torch.randn(1, config.keypoints, config.n_embd) * 0.02)
        self.num_tokens = config.keypoints
        grid = _grid(config)
        coords = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2.0 - 1.0
        ys, xs = torch.meshgrid(coords, coords, indexing="ij")
        self.register_buffer("xy", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)

    def reset_film(self) -> None:
        self.stem.reset_film()
        if self.query_film is not None:
            nn.init.zeros_(self.query_film.weight)
            nn.init.zeros_(self.query_film.bias)

    def attention(self, images: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Each keypoint's attention over the cells (N, K, h*w) and the stem's features (N, C, h, w)."""
        x = self.stem(images, condition)
        queries = self.queries.expand(x.shape[0], -1, -1)  # (N, K, d)
        if self.query_film is not None:
            queries = queries + self.query_film(condition).view_as(queries)
        scores = queries @ rearrange(self.keys(x), "n d h w -> n d (h w)")  # (N, K, hw)
        # Standardized per map: raw scores of a fresh conv are nearly equal everywhere, their softmax
        # uniform, the coordinates all at the centre and their gradients vanishing (measured: maps
        # still uniform after 6,000 steps). Standardized, a map is peaked from the start and learns
        # where to look; the learned temperature sets how peaked.
        scores = (scores - scores.mean(-1, keepdim=True)) / (scores.std(-1, keepdim=True) + 1e-5)
        return torch.softmax(scores * self.temperature.exp(), dim=-1), x

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        """(N, 3, H, W) in [0, 1] (and the instruction vectors with FiLM) -> (N, keypoints, n_embd)."""
        attention, x = self.attention(images, condition)
        xy = attention @ self.xy.to(attention.dtype)  # (N, K, 2) expected coordinates
        attended = attention @ rearrange(x, "n c h w -> n (h w) c")  # (N, K, C)
        return self.proj(torch.cat([xy, attended], dim=-1)) + self.pos


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
            features = rearrange(features, "n c h w -> n (h w) c")
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

    Each of ``heads`` learned queries scores every token, so each pooled part is dominated by the
    words that decide the task and barely moved by filler words, which a plain mean would average in
    with equal weight (padding, and the unknown words a tokenizer hides, get no weight at all).
    Several queries, why: one weighted average has to carry the colour, the object and the verb at
    once; measured on the 20-task suite, one query grounded the colour but confused "the red block"
    with "the red button"."""

    def __init__(self, n_embd: int, heads: int = 4):
        super().__init__()
        # Small random queries: identical ones would get identical gradients and stay one query.
        self.queries = nn.Parameter(torch.randn(heads, n_embd) * 0.02)
        self.mix = nn.Linear(heads * n_embd, n_embd)
        self.norm = nn.LayerNorm(n_embd)

    def forward(self, text: Tensor, is_pad: Tensor) -> Tensor:
        """(B, L, D) features, (B, L) padding -> (B, D)."""
        scores = torch.einsum("bld,hd->bhl", text, self.queries) / text.shape[-1] ** 0.5
        weights = torch.softmax(scores.masked_fill(is_pad[:, None, :], float("-inf")), dim=-1)
        pooled = torch.einsum("bhl,bld->bhd", weights, text)
        return self.norm(self.mix(rearrange(pooled, "b h d -> b (h d)")))


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
    "keypoints": KeypointEncoder,
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
