"""Action heads: what the action part of the sequence holds, how it is trained and read out.

The transformer is shared; the head decides the tokens that follow the prefix (instruction +
observations) and the loss on their final hidden states (``VLAConfig.action_head``):

- ``ar_bins`` / ``ar_fast``: discrete action tokens (256-bin or FAST, :mod:`vla.model.action_tokenizers`)
  predicted one at a time, as in RT-2 / OpenVLA / pi0-FAST. Input ``[BOS, a0, ..., a_{L-2}]``, causal
  over the action tokens, cross-entropy on ``[a0, ..., a_{L-1}]``.
- ``l1``: parallel regression, as in OpenVLA-OFT. ``H`` learned action slots attend to the prefix
  and to each other (bidirectionally) and are read out in ONE forward pass as the normalized chunk
  (H, A); L1 loss.
- ``flow``: flow matching over the chunk, as in pi0 / Transfusion. The chunk enters as ``H``
  continuous tokens (a noisy chunk ``x_tau = tau * a + (1 - tau) * eps`` plus the flow time
  ``tau``), bidirectional among themselves; the read-out is the velocity ``a - eps`` (MSE loss).
  Sampling integrates from ``tau = 0`` (noise) to 1 with ``flow_steps`` Euler steps; the prefix is
  encoded once and its key/value cache reused by every step (:mod:`vla.model.decoding`).

Every head has the same small, stateless surface, used by :class:`vla.model.model.VLA` and the
decoder: ``causal`` (whether action tokens see only earlier ones), ``continuous``,
``train_inputs(targets) -> (tokens (B, L, D), context)``, ``loss(hidden, targets, mask, context)``
(``context`` carries what the loss needs from the inputs, e.g. the flow head's noise) and the
read-out ``out`` (a linear map of final hidden states: logits, actions or velocities).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from vla.model.model import VLAConfig

# Discrete heads and the action tokenizer each one uses (the checkpoint saves the tokenizer).
TOKENIZER_OF_HEAD = {"ar_bins": "binning", "ar_fast": "fast", "l1": "continuous", "flow": "continuous"}


class TokenHead(nn.Module):
    """Discrete action tokens decoded autoregressively (``ar_bins``, ``ar_fast``)."""

    causal = True
    continuous = False

    def __init__(self, config: VLAConfig):
        super().__init__()
        D = config.n_embd
        self.embed = nn.Embedding(config.action_vocab_size, D)
        self.bos = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.out = nn.Linear(D, config.action_vocab_size, bias=False)

    def train_inputs(self, tokens: Tensor) -> tuple[Tensor, None]:
        """``[BOS, t0, ..., t_{L-2}]`` embeddings (B, L, D) for targets ``tokens`` (B, L) (teacher forcing)."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"a token head trains on token ids (B, L) int64, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        bos = self.bos.expand(tokens.shape[0], -1, -1)
        return torch.cat([bos, self.embed(tokens[:, :-1])], dim=1), None

    def loss(self, hidden: Tensor, tokens: Tensor, mask: Tensor | None, context: None = None) -> Tensor:
        """Mean next-token cross-entropy over the tokens where ``mask`` is True."""
        losses = F.cross_entropy(self.out(hidden).transpose(1, 2), tokens, reduction="none")  # (B, L)
        return _masked_mean(losses, mask)


class RegressionHead(nn.Module):
    """``H`` learned action slots read out in parallel as the normalized chunk (``l1``)."""

    causal = False
    continuous = True

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.horizon, self.action_dim = config.horizon, config.action_dim
        self.slots = nn.Parameter(torch.randn(1, config.horizon, config.n_embd) * 0.02)
        self.out = nn.Linear(config.n_embd, config.action_dim)

    def train_inputs(self, actions: Tensor) -> tuple[Tensor, None]:
        _check_chunk(actions, self.horizon, self.action_dim)
        return self.query(actions.shape[0]), None

    def query(self, batch: int) -> Tensor:
        """The slot embeddings (B, H, D) an inference pass reads the chunk from."""
        return self.slots.expand(batch, -1, -1)

    def loss(self, hidden: Tensor, actions: Tensor, mask: Tensor | None, context: None = None) -> Tensor:
        """Mean absolute error per (step, dim), over the steps where ``mask`` (B, H) is True."""
        errors = (self.out(hidden) - actions).abs().mean(dim=-1)  # (B, H)
        return _masked_mean(errors, mask)


class FlowHead(nn.Module):
    """Flow matching over the chunk (``flow``): noisy actions + flow time in, velocity out."""

    causal = False
    continuous = True

    def __init__(self, config: VLAConfig):
        super().__init__()
        D = config.n_embd
        self.horizon, self.action_dim = config.horizon, config.action_dim
        self.action_in = nn.Linear(config.action_dim, D)
        self.time_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.out = nn.Linear(D, config.action_dim)

    def embed(self, noisy: Tensor, tau: Tensor) -> Tensor:
        """Tokens (B, H, D) of a noisy chunk (B, H, A) at flow time ``tau`` (B,) in [0, 1]."""
        return (
            self.action_in(noisy) + self.time_mlp(_time_features(tau, self.action_in.out_features))[:, None]
        )

    def train_inputs(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Draw the flow time and noise (torch's seeded global RNG), embed the noisy chunk; the
        context is the noise, which the loss's target velocity needs."""
        _check_chunk(actions, self.horizon, self.action_dim)
        B = actions.shape[0]
        # Times skewed towards the noisy end (pi0: Beta(1.5, 1)): the hard part of the path.
        tau = 0.999 * (1.0 - torch.distributions.Beta(1.5, 1.0).sample((B,)).to(actions))
        noise = torch.randn_like(actions)
        noisy = tau[:, None, None] * actions + (1.0 - tau[:, None, None]) * noise
        return self.embed(noisy, tau), noise

    def loss(
        self, hidden: Tensor, actions: Tensor, mask: Tensor | None, context: Tensor | None = None
    ) -> Tensor:
        """Mean squared error of the predicted velocity against ``actions - noise`` (noise = ``context``)."""
        if context is None:
            raise ValueError("FlowHead.loss needs the noise that train_inputs() returned as its context")
        errors = (self.out(hidden) - (actions - context)).square().mean(dim=-1)  # (B, H)
        return _masked_mean(errors, mask)


def _time_features(tau: Tensor, dim: int) -> Tensor:
    """Sinusoidal features (B, dim) of ``tau`` in [0, 1] (periods from 1/1000 to 1 of the range)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=tau.device, dtype=tau.dtype) / half)
    angles = tau[:, None] * freqs[None] * 1000.0
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _check_chunk(actions: Tensor, horizon: int, action_dim: int) -> None:
    if (
        actions.dim() != 3
        or tuple(actions.shape[1:]) != (horizon, action_dim)
        or not actions.is_floating_point()
    ):
        raise ValueError(
            f"a continuous head trains on normalized chunks (B, {horizon}, {action_dim}) float, "
            f"got {tuple(actions.shape)} {actions.dtype}"
        )


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


ACTION_HEADS: dict[str, Callable[[VLAConfig], nn.Module]] = {
    "ar_bins": TokenHead,
    "ar_fast": TokenHead,
    "l1": RegressionHead,
    "flow": FlowHead,
}
