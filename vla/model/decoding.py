"""The one decoder: an observation batch -> the action head's prediction, with a KV cache.

Every head runs the same two phases:

1. **Prefill.** The prefix (instruction + observations) and the head's first action inputs run
   through the blocks once, writing every layer's keys and values into buffers sized for the whole
   sequence: ``[BOS]`` for a token head, the ``H`` regression slots for ``l1`` (which are then
   already the answer), the starting noise at flow time 0 for ``flow``.
2. **Steps** against that cache: a token head feeds back one token per step at the next position
   (greedy or sampled, :class:`DecodeOptions`); the flow head feeds its whole chunk back ``K - 1``
   more times at the same positions (each Euler step overwrites the action keys and values, the
   prefix's are reused).

The step layers come from :mod:`vla.model.inference_weights` (fp32, bf16 or int8 weights laid out
for small activations) or are the model's own blocks; both have ``Block.forward``'s call, so there
is one loop. ``static=True`` is the export-friendly form :mod:`vla.policies.export` traces: no
data-dependent Python control flow (the padding mask is always applied, EOS masks instead of
stopping the loop, no cache), which gives the same tokens and actions as the eager form.

``use_cache=False`` is the reference the cache is tested and benchmarked against: the full forward
pass over the prefix and every action input so far, at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vla.model.inference_weights import prepare

if TYPE_CHECKING:
    from vla.model.model import VLA

Layer = Callable[[Tensor, "Tensor | None", Tensor, int], Tensor]


@dataclass
class DecodeOptions:
    """How a chunk is decoded (the action tokenizer's ``generation_options()`` fills the token ones)."""

    num_tokens: int | None = None  # token heads: how many (default: the model's max_action_tokens)
    temperature: float = 0.0  # token heads: 0 is greedy
    top_k: int | None = None
    eos_token: int | None = None  # once every row produced it, decoding stops; the rest is pad_token
    pad_token: int | None = None
    suppress_tokens: Sequence[int] = ()  # ids never produced
    generator: torch.Generator | None = None  # sampling; for flow, fresh starting noise per row
    flow_steps: int | None = None  # flow head: Euler steps (default: the model's flow_steps)
    noise_seed: int = 0  # flow head without a generator: every row starts from this seed's noise
    noise_scale: float = 1.0  # flow head: the starting noise times this (0: every chunk starts at zero)
    return_logits: bool = False  # token heads: also return the (processed) logits of every step
    static: bool = False  # export-friendly form (see the module docstring)
    _suppress: Tensor | None = field(default=None, init=False, repr=False)

    @property
    def fill(self) -> int:
        """The id written after EOS (and fed back for finished rows)."""
        if self.pad_token is not None:
            return self.pad_token
        return self.eos_token if self.eos_token is not None else 0

    def pick(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Processed logits (B, V) and the chosen token per row (B,)."""
        if self._suppress is not None:
            logits = logits.index_fill(1, self._suppress, float("-inf"))
        if self.temperature <= 0.0:
            return logits, logits.argmax(dim=-1)
        scaled = logits / self.temperature
        if self.top_k is not None and self.top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, self.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        return logits, torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


def decode(
    model: VLA,
    obs: dict[str, Tensor],
    options: DecodeOptions | dict[str, Any] | None = None,
    *,
    precision: str = "fp32",
    use_cache: bool = True,
) -> Any:
    """The head's prediction: token ids (B, L) (with ``return_logits``, also (B, L, V) logits) for a
    token head; the normalized chunk (B, H, A) float32 for a continuous head."""
    opts = _checked_options(model, options)
    if opts.static:  # traced by export: the modules themselves, no mode switches, no caching
        return _HEAD_DECODERS[model.config.action_head](_Session(model, None, obs, opts, use_cache), opts)
    was_training = model.training
    if was_training:  # decoding never uses dropout; toggling walks every module, so only when needed
        model.eval()
    try:
        weights = prepare(model, precision)  # the model itself at fp32, else a cached copy
        if weights.dtype != torch.float32:
            obs = {k: v.to(weights.dtype) if v.is_floating_point() else v for k, v in obs.items()}
        with torch.inference_mode():  # cheaper than no_grad: no version counters or views tracked
            session = _Session(weights.model, weights, obs, opts, use_cache)
            out = _HEAD_DECODERS[model.config.action_head](session, opts)
    finally:
        if was_training:
            model.train()
    # Clones made outside inference mode are ordinary tensors, usable later in autograd.
    return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()


def _checked_options(model: VLA, options: DecodeOptions | dict[str, Any] | None) -> DecodeOptions:
    opts = options if isinstance(options, DecodeOptions) else DecodeOptions(**(options or {}))
    config = model.config
    if opts.num_tokens is None:
        opts.num_tokens = config.horizon if config.continuous_actions else config.max_action_tokens
    if not config.continuous_actions and not 1 <= opts.num_tokens <= config.max_action_tokens:
        raise ValueError(f"num_tokens must be in 1..{config.max_action_tokens}, got {opts.num_tokens}")
    if opts.top_k is not None and opts.top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {opts.top_k}")
    if opts.flow_steps is not None and opts.flow_steps < 1:
        raise ValueError(f"flow_steps must be >= 1, got {opts.flow_steps}")
    device = next(model.parameters()).device
    if opts.suppress_tokens:
        opts._suppress = torch.tensor(sorted(set(opts.suppress_tokens)), dtype=torch.long, device=device)
    return opts


class _Session:
    """One decoding call's state: the prefix, the KV caches and the layers that run against them."""

    def __init__(
        self, model: VLA, weights: Any, obs: dict[str, Tensor], opts: DecodeOptions, use_cache: bool
    ):
        self.model, self.obs, self.use_cache, self.static = model, obs, use_cache, opts.static
        self.head = model.action_head
        if weights is None:  # the modules: what export traces
            self.layers: list[Layer] = list(model.blocks)
            self.readout: Callable[[Tensor], Tensor] = lambda x: self.head.out(model.ln_f(x))
        else:
            self.layers, self.readout = list(weights.steps), weights.readout
        self.prefix, self.rank, self.valid = model.embed_prefix(obs)
        self.batch = self.prefix.shape[0]

    def prefill(self, action_inputs: Tensor, total_actions: int) -> Tensor:
        """Run prefix + first action inputs (B, L0, D); the read-out of those action positions."""
        model, c = self.model, self.model.config
        B, P, _ = self.prefix.shape
        if not self.use_cache:
            hidden, _ = model.run(self.obs, action_inputs)
            return self.head.out(hidden[:, P:])
        x = torch.cat([self.prefix, model.embed_actions(action_inputs, 0)], dim=1)
        mask = model.attention_mask(self.rank, self.valid, action_inputs.shape[1])
        # One buffer per layer (not views of one tensor): an exported graph writes them in place.
        self.caches = [self.prefix.new_zeros(B, P + total_actions, 2 * c.n_embd) for _ in range(c.n_layer)]
        for block, cache in zip(model.blocks, self.caches, strict=True):
            x = block(x, mask, cache, 0)
        # Later steps see every cached key up to their own slice; only prefix padding is masked.
        self.key_mask: Tensor | None = torch.cat([self.valid, self.valid.new_ones(B, total_actions)], 1)[
            :, None, None, :
        ]
        if not self.static and bool(self.valid.all()):
            self.key_mask = None  # lets scaled_dot_product_attention take its fastest path
        return self.readout(x[:, P:])

    def step(self, action_inputs: Tensor, position: int) -> Tensor:
        """Action inputs (B, S, D) at action positions ``position..position+S-1`` against the cache."""
        if not self.use_cache:
            raise RuntimeError("step() runs against the cache; the uncached reference re-runs prefill")
        P = self.prefix.shape[1]
        x = self.model.embed_actions(action_inputs, position)
        end = P + position + x.shape[1]
        mask = None if self.key_mask is None else self.key_mask[..., :end]
        for layer, cache in zip(self.layers, self.caches, strict=True):
            x = layer(x, mask, cache, P + position)
        return self.readout(x)


def _decode_tokens(session: _Session, opts: DecodeOptions) -> Any:
    """Token heads: BOS in the prefill, then one fed-back token per step."""
    head, B = session.head, session.batch
    n = int(opts.num_tokens or 0)
    bos = head.bos.expand(B, -1, -1).to(session.prefix.dtype)
    logits = session.prefill(bos, n)[:, -1].float()  # sampling in fp32 whatever the model ran at
    device = logits.device
    tokens: list[Tensor] = []
    all_logits: list[Tensor] = []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    inputs = bos
    for i in range(n):
        if i:
            last = head.embed(tokens[-1][:, None])
            if session.use_cache:
                logits = session.step(last, i)[:, -1].float()
            else:
                inputs = torch.cat([inputs, last], dim=1)
                logits = session.prefill(inputs, i + 1)[:, -1].float()
        logits, chosen = opts.pick(logits)
        if opts.eos_token is not None:
            chosen = torch.where(done, torch.full_like(chosen, opts.fill), chosen)
            done = done | (chosen == opts.eos_token)
        tokens.append(chosen)
        all_logits.append(logits)
        if opts.eos_token is not None and not opts.static and bool(done.all()):
            break
    ids = torch.stack(tokens, dim=1)
    if ids.shape[1] < n:  # stopped early: every row has ended, the rest is padding
        ids = torch.cat([ids, ids.new_full((B, n - ids.shape[1]), opts.fill)], dim=1)
    if not opts.return_logits:
        return ids
    stacked = torch.stack(all_logits, dim=1)
    if stacked.shape[1] < n:
        stacked = torch.cat([stacked, stacked.new_zeros(B, n - stacked.shape[1], stacked.shape[2])], dim=1)
    return ids, stacked


def _decode_regression(session: _Session, opts: DecodeOptions) -> Tensor:
    """``l1``: the slots' read-out after one pass is the chunk."""
    slots = session.head.query(session.batch).to(session.prefix.dtype)
    return session.prefill(slots, slots.shape[1]).float()


def flow_noise(horizon: int, action_dim: int, seed: int) -> np.ndarray:
    """The flow sampler's starting noise (H, A) for ``seed``: numpy, so it is the same on every
    device and precision, and a constant when export traces it."""
    return np.random.default_rng(seed).standard_normal((horizon, action_dim)).astype(np.float32)


def _decode_flow(session: _Session, opts: DecodeOptions) -> Tensor:
    """``flow``: Euler steps from noise (tau = 0) to the chunk (tau = 1), the prefix cached once."""
    model, head, B = session.model, session.head, session.batch
    c = model.config
    steps = int(opts.flow_steps or c.flow_steps)
    dtype, device = session.prefix.dtype, session.prefix.device
    if opts.generator is not None:
        x = torch.randn(B, c.horizon, c.action_dim, generator=opts.generator, device=device)
    else:  # every row starts from the same noise: a row's actions never depend on the batch
        x = torch.from_numpy(flow_noise(c.horizon, c.action_dim, opts.noise_seed)).to(device)
        x = x.expand(B, -1, -1)
    if opts.noise_scale != 1.0:
        x = x * opts.noise_scale
    dt = 1.0 / steps
    for k in range(steps):  # the path is integrated in fp32 whatever precision the layers run at
        tau = torch.full((B,), k * dt, device=device, dtype=dtype)
        tokens = head.embed(x.to(dtype), tau)
        first = k == 0 or not session.use_cache
        velocity = session.prefill(tokens, c.horizon) if first else session.step(tokens, 0)
        x = x + dt * velocity.float()
    return x


_HEAD_DECODERS: dict[str, Callable[[_Session, DecodeOptions], Any]] = {
    "ar_bins": _decode_tokens,
    "ar_fast": _decode_tokens,
    "l1": _decode_regression,
    "flow": _decode_flow,
}
