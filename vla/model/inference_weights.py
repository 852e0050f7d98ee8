"""A model's weights laid out for decoding, at the precision asked for, cached per model.

The decoder (:mod:`vla.model.decoding`) reads the model through :func:`prepare`, which returns the
module to run the prefix with, every block as a layer for the steps after it (action tokens run
against the cached prefix) and the read-out (``ln_f`` then the action head's output map). A step
layer has the same call as :meth:`vla.model.model.Block.forward` (``layer(x, mask, cache, start)``),
so the decoder runs either; at batch 1 on a CPU a step is bound by per-op overhead, so step layers
call the kernels directly on 2-D activations:

- ``"fp32"``: the model itself; step matrices pre-transposed to (in, out) for ``addmm``.
- ``"bf16"``: a bfloat16 copy of the model (prefix and steps in bf16). On CPUs with AMX (Sapphire
  Rapids and later) the prefix's matrix products run about 4x faster than in fp32; a one-token
  step does not (a matrix-vector product is bound by reading the weights, and oneDNN's bf16
  GEMV is no faster than fp32 GEMV there). On a CPU without AVX-512 oneDNN emulates bf16, many times slower
  than fp32: :func:`prepare` warns there (``precision=auto`` is fp32).
- ``"int8"``: the bf16 copy for the prefix, and weight-only int8 step matrices (symmetric, one
  scale per output channel) multiplied by ``torch._weight_int8pack_mm``: a step reads a quarter
  of the fp32 bytes. CPU only (the kernel this relies on is the CPU one).

Everything derived is rebuilt whenever any parameter of the model changes (its storage or its
version counter moves), so training between calls is safe, and is kept in the model's
``__dict__``, never in its ``state_dict``. Measured figures: ``scripts/bench_model.py --precision``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from vla.model.model import VLA

PRECISIONS = ("fp32", "bf16", "int8")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.bfloat16}
_CACHE_ATTRIBUTE = "_inference_weights_cache"


@dataclass(frozen=True)
class StepLinear:
    """One linear layer for a one-token step: ``x @ weight + bias``, or int8 ``weight`` with ``scales``."""

    weight: Tensor  # (in, out) for addmm, or (out, in) int8 when scales is set
    bias: Tensor | None
    scales: Tensor | None = None  # (out,) per-channel dequantization scales of an int8 weight

    def __call__(self, x: Tensor) -> Tensor:
        if self.scales is not None:
            y = torch._weight_int8pack_mm(x, self.weight, self.scales)
            return y if self.bias is None else y.add_(self.bias)
        return torch.mm(x, self.weight) if self.bias is None else torch.addmm(self.bias, x, self.weight)


@dataclass(frozen=True)
class StepWeights:
    """One block's parameters laid out for steps, callable like :meth:`vla.model.model.Block.forward`."""

    n_head: int
    ln1: tuple[Tensor, Tensor, float]
    qkv: StepLinear
    proj: StepLinear
    ln2: tuple[Tensor, Tensor, float]
    fc: StepLinear
    out: StepLinear

    def __call__(self, x: Tensor, mask: Tensor | None, cache: Tensor, start: int) -> Tensor:
        """The block on ``x`` (B, S, D) at positions ``start..start+S-1``: its keys and values go into
        ``cache`` (B, S_max, 2D), its queries see the cache up to their own slice (``mask``: (B, 1,
        S | 1, start + S) or None). The same arithmetic as the module path (a test checks)."""
        B, S, D = x.shape
        H = self.n_head
        flat = x.reshape(B * S, D)
        qkv = self.qkv(F.layer_norm(flat, (D,), *self.ln1)).view(B, S, 3 * D)
        cache[:, start : start + S] = qkv[..., D:]
        kv = cache[:, : start + S]
        q = qkv[..., :D].view(B, S, H, D // H).transpose(1, 2)
        k = kv[..., :D].view(B, -1, H, D // H).transpose(1, 2)
        v = kv[..., D:].view(B, -1, H, D // H).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B * S, D)
        flat = self.proj(y).add_(flat)
        h = F.gelu(self.fc(F.layer_norm(flat, (D,), *self.ln2)), approximate="tanh")
        return self.out(h).add_(flat).view(B, S, D)


@dataclass(frozen=True)
class Readout:
    """Final hidden states (B, S, D) -> the action head's output: ``out(layer_norm(x, *ln_f))``."""

    ln_f: tuple[Tensor, Tensor, float]
    out: StepLinear

    def __call__(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        y = self.out(F.layer_norm(x.reshape(B * S, D), (D,), *self.ln_f))
        return y.view(B, S, -1)


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` returns: the module to run the prefix with, its float dtype, the layers
    for the steps after the prefix and the read-out."""

    model: VLA
    dtype: torch.dtype
    steps: list[StepWeights]
    readout: Readout


def check_precision(precision: str, device: torch.device) -> None:
    """Raise ``ValueError`` naming the choices when ``precision`` is unknown or unsupported on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision 'int8' is a CPU decoding path; on {device.type} use 'bf16'")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs oneDNN's bf16 kernels natively (AVX-512 or newer). On an AVX2-only CPU
    they are emulated: ``small``'s flow chunk took 10.9 s at bf16 against 0.47 s at fp32 on a
    2-core AVX2 AMD EPYC (``scripts/bench_model.py --precision``)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no claim either way
        return True


def warn_if_slow(precision: str, device: torch.device) -> None:
    """A ``RuntimeWarning`` when ``precision`` runs bf16 matrix products on a CPU that emulates them."""
    if precision in ("bf16", "int8") and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn(
            f"precision {precision!r} runs bf16 matrix products, which this CPU "
            f"({torch.backends.cpu.get_cpu_capability()}, no AVX-512) emulates: expect it to be many times "
            "slower than 'fp32' here; precision=auto picks fp32",
            RuntimeWarning,
            stacklevel=3,
        )


def prepare(model: VLA, precision: str = "fp32") -> Prepared:
    """The model at ``precision`` with its step weights (built once, rebuilt after any weight change)."""
    device = next(model.parameters()).device
    check_precision(precision, device)
    key = _parameter_key(model)
    cache = model.__dict__.setdefault(_CACHE_ATTRIBUTE, {})
    hit = cache.get(precision)
    if hit is not None and hit[0] == key:
        return hit[1]
    warn_if_slow(precision, device)  # once per build, not per chunk
    # Built outside inference mode: the copies are ordinary tensors, whatever the caller runs under.
    with torch.inference_mode(False), torch.no_grad():
        runner = model if precision == "fp32" else _copy_as(model, _DTYPES[precision])
        quantize = precision == "int8"
        prepared = Prepared(
            runner,
            _DTYPES[precision],
            [_block_steps(block, quantize) for block in runner.blocks],
            Readout(_norm(runner.ln_f), _linear(runner.action_head.out, quantize)),
        )
    cache.clear()  # one precision at a time: a stale copy of a model that trains is only memory
    cache[precision] = (key, prepared)
    return prepared


def _parameter_key(model: VLA) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


def _copy_as(model: VLA, dtype: torch.dtype) -> VLA:
    """A deep copy in ``dtype`` and eval mode, without the master's derived caches."""
    derived = model.__dict__.pop(_CACHE_ATTRIBUTE, None)
    try:
        clone = copy.deepcopy(model)
    finally:
        if derived is not None:
            model.__dict__[_CACHE_ATTRIBUTE] = derived
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.to(dtype).eval()


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: ``(q (out, in) int8, scales (out,))`` with
    ``weight ~= q * scales[:, None]`` (error at most half a step, ``max|w_row| / 254``)."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scales.to(weight.dtype)


def _linear(layer: torch.nn.Linear, quantize: bool) -> StepLinear:
    bias = None if layer.bias is None else layer.bias.detach()
    if quantize:
        q, scales = quantize_int8(layer.weight)
        return StepLinear(q, bias, scales)
    return StepLinear(layer.weight.detach().t().contiguous(), bias)


def _norm(ln: torch.nn.LayerNorm) -> tuple[Tensor, Tensor, float]:
    return ln.weight.detach(), ln.bias.detach(), ln.eps


def _block_steps(block: torch.nn.Module, quantize: bool) -> StepWeights:
    return StepWeights(
        block.attn.n_head,
        _norm(block.ln1),
        _linear(block.attn.qkv, quantize),
        _linear(block.attn.proj, quantize),
        _norm(block.ln2),
        _linear(block.mlp.c_fc, quantize),
        _linear(block.mlp.c_proj, quantize),
    )
