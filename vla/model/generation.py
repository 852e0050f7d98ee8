"""Autoregressive decoding of action tokens, with a preallocated KV cache or without one.

The cached path runs the prefix (instruction + observations) and the BOS action embedding once
(prefill), writing every layer's keys and values into buffers sized for the whole chunk, then feeds
one token per step. Each step's query attends to the cache up to its own position, so no causal mask
is needed; the only mask left is the prefix padding (dropped entirely when nothing is padded, which
lets ``scaled_dot_product_attention`` take its fastest path). The uncached path re-runs the full
forward pass for every token; it exists as the reference the cache is tested and benchmarked against.

At batch 1 on a CPU a decode step is bound by per-op overhead, not arithmetic (a 1x128 by 128x384
matmul is a few microseconds). So the one-token step does not go through the modules: it calls the
kernels directly on 2-D activations with weights pre-transposed for ``addmm`` (measured on the
2-core CPU: 0.50 -> 0.35 ms per token for ``tiny``). Those matrices, and the bf16 or int8 copies
``precision`` asks for, come from :mod:`vla.model.inference_weights`, which keeps them per model and
rebuilds them whenever a weight changes, so training in between is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from vla.model.inference_weights import Prepared, StepWeights, prepare

if TYPE_CHECKING:
    from vla.model.model import VLA


@dataclass
class Sampling:
    """How each step turns logits into a token (see :meth:`vla.model.model.VLA.generate`)."""

    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    generator: torch.Generator | None = None
    eos_token: int | None = None
    pad_token: int | None = None
    suppress: Tensor | None = None  # ids never produced

    @property
    def fill(self) -> int:
        """The id written after EOS (and fed back for finished rows)."""
        if self.pad_token is not None:
            return self.pad_token
        return self.eos_token if self.eos_token is not None else 0

    def pick(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Processed logits (B, V) and the chosen token per row (B,)."""
        if self.suppress is not None:
            logits = logits.index_fill(1, self.suppress, float("-inf"))
        if self.temperature <= 0.0:
            return logits, logits.argmax(dim=-1)
        scaled = logits / self.temperature
        if self.top_k is not None and self.top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, self.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        return logits, torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


def generate(
    model: VLA,
    obs: dict[str, Tensor],
    num_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    eos_token: int | None = None,
    pad_token: int | None = None,
    suppress_tokens: list[int] | None = None,
    return_logits: bool = False,
    precision: str = "fp32",
) -> Tensor | tuple[Tensor, Tensor]:
    """See :meth:`vla.model.model.VLA.generate`."""
    config = model.config
    if not 1 <= num_tokens <= config.max_action_tokens:
        raise ValueError(f"num_tokens must be in 1..{config.max_action_tokens}, got {num_tokens}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    device = next(model.parameters()).device
    suppress = None
    if suppress_tokens:
        suppress = torch.tensor(sorted(set(suppress_tokens)), dtype=torch.long, device=device)
    sampling = Sampling(temperature, top_k, generator, eos_token, pad_token, suppress)
    was_training = model.training
    if was_training:  # generation never uses dropout; toggling walks every module, so only when needed
        model.eval()
    try:
        weights = prepare(model, precision)  # the model itself at fp32, else a cached copy
        if weights.dtype != torch.float32:
            obs = {k: v.to(weights.dtype) if v.is_floating_point() else v for k, v in obs.items()}
        with torch.inference_mode():  # cheaper than no_grad: no version counters or views tracked
            step = (
                _CachedDecoder(weights, obs, num_tokens)
                if use_cache
                else _UncachedDecoder(weights.model, obs)
            )
            tokens, logits = _decode(step, num_tokens, sampling, return_logits, config.action_vocab_size)
    finally:
        if was_training:
            model.train()
    # Clones made outside inference mode are ordinary tensors, usable later in autograd.
    return (tokens.clone(), logits.clone()) if logits is not None else tokens.clone()


def _decode(
    step: _CachedDecoder | _UncachedDecoder,
    num_tokens: int,
    sampling: Sampling,
    return_logits: bool,
    vocab_size: int,
) -> tuple[Tensor, Tensor | None]:
    """The token loop shared by both decoders: tokens (B, num_tokens) and, if asked, their logits."""
    logits = step.first().float()  # sampling in fp32 whatever the precision the model ran at
    B, device = logits.shape[0], logits.device
    tokens = torch.full((B, num_tokens), sampling.fill, dtype=torch.long, device=device)
    all_logits = torch.zeros(B, num_tokens, vocab_size, device=device) if return_logits else None
    done = torch.zeros(B, dtype=torch.bool, device=device) if sampling.eos_token is not None else None
    for i in range(num_tokens):
        if i:
            logits = step.next(tokens[:, i - 1 : i], i).float()
        logits, chosen = sampling.pick(logits)
        if done is not None:
            chosen = torch.where(done, torch.full_like(chosen, sampling.fill), chosen)
            done = done | (chosen == sampling.eos_token)
        tokens[:, i] = chosen
        if all_logits is not None:
            all_logits[:, i] = logits
        if done is not None and bool(done.all()):
            break
    return tokens, all_logits


class _UncachedDecoder:
    """Reference decoding: the full forward pass over the prefix and every token so far."""

    def __init__(self, model: VLA, obs: dict[str, Tensor]):
        self.model, self.obs = model, obs

    def first(self) -> Tensor:
        batch = self.obs["images"].shape[0]
        return self.next(torch.zeros(batch, 0, dtype=torch.long, device=self.obs["images"].device), 0)

    def next(self, last_token: Tensor, i: int) -> Tensor:
        self.tokens = last_token if i == 0 else torch.cat([self.tokens, last_token], dim=1)
        dummy = self.tokens.new_zeros(self.tokens.shape[0], 1)  # the slot being predicted
        return self.model(self.obs, torch.cat([self.tokens, dummy], dim=1))[:, -1]


class _CachedDecoder:
    """Prefill once into preallocated per-layer key/value buffers (B, S_max, 2D), then one token per step."""

    def __init__(self, weights: Prepared, obs: dict[str, Tensor], num_tokens: int):
        self.model = weights.model
        self.weights = weights
        self.obs = obs
        self.num_tokens = num_tokens

    def first(self) -> Tensor:
        model, c = self.model, self.model.config
        prefix, rank, valid = model.embed_prefix(self.obs)
        B, P, _ = prefix.shape
        self.prefix_len = P
        total = P + self.num_tokens  # prefix + BOS + the first num_tokens - 1 tokens fed back
        self.caches = list(prefix.new_empty(c.n_layer, B, total, 2 * c.n_embd).unbind(0))
        x = torch.cat([prefix, model.bos_embedding(B)], dim=1)
        mask = model.attention_mask(rank, valid, 1)
        for block, cache in zip(model.blocks, self.caches, strict=True):
            x = block(x, mask, cache, 0)
        # Later steps see every cached key up to their own position; only prefix padding is masked.
        self.key_mask = (
            None
            if bool(valid.all())
            else torch.cat([valid, valid.new_ones(B, self.num_tokens)], 1)[:, None, None, :]
        )
        return model.head(model.ln_f(x[:, -1]))

    def next(self, last_token: Tensor, i: int) -> Tensor:
        model = self.model
        x = model.embed_actions(last_token, i)[:, 0]  # (B, D)
        position = self.prefix_len + i
        mask = None if self.key_mask is None else self.key_mask[..., : position + 1]
        w = self.weights
        for layer, cache in zip(w.steps, self.caches, strict=True):
            x = _step_layer(layer, x, cache, position, mask)
        return w.head(F.layer_norm(x, x.shape[-1:], *w.ln_f))


def _step_layer(w: StepWeights, x: Tensor, cache: Tensor, position: int, mask: Tensor | None) -> Tensor:
    """:class:`vla.model.model.Block` for one token ``x`` (B, D) at ``position``, writing its key and
    value into ``cache`` (B, S_max, 2D); the same arithmetic as the module path (a test checks)."""
    B, D = x.shape
    H = w.n_head
    h = F.layer_norm(x, (D,), w.ln1[0], w.ln1[1], w.ln1[2])
    qkv = w.qkv(h)
    cache[:, position] = qkv[:, D:]
    kv = cache[:, : position + 1]
    q = qkv[:, :D].view(B, H, 1, D // H)
    k = kv[..., :D].view(B, -1, H, D // H).transpose(1, 2)
    v = kv[..., D:].view(B, -1, H, D // H).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = w.proj(y.view(B, D)).add_(x)
    h = F.layer_norm(x, (D,), w.ln2[0], w.ln2[1], w.ln2[2])
    h = F.gelu(w.fc(h), approximate="tanh")
    return w.out(h).add_(x)
