"""Exponential moving average of model weights (used for validation, evaluation and deployment)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """Keeps ``module``, a frozen copy of a model whose weights track the training model's.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so
    early EMA weights are not dominated by the random initialisation. Buffers are copied as they are.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the averaged weights towards ``model``'s."""
        decay = self.current_decay()
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        if decay == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.updates += 1
