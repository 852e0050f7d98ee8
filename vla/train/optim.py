"""AdamW with linear warmup and cosine decay.

The learning rate is a pure function of the step (:func:`lr_at`), set on the optimizer before every
update, so resuming needs nothing but the step number: no scheduler object to save.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for update number ``step`` (0-based): linear warmup, then cosine to ``base_lr * min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases, norms or scalars), as in GPT-2 / nanoGPT."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused AdamW (one kernel over all parameters) on the CPU and CUDA: on a 2-core CPU a step over
    # tiny128_deep's 1.4M parameters took 1.7 ms fused against 7.6 ms with torch's CPU default (a
    # Python loop over tensors). Other devices keep torch's default.
    fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay) and bool(decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` to every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
