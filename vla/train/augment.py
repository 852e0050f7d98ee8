"""Training augmentation: random image shifts (DrQ, Kostrikov et al. 2021; Diffusion Policy's crops)
and word dropout on the instructions.

Pixel-based behaviour cloning from a few hundred demonstrations overfits quickly: the model memorises
exact pixel layouts. Shifting every image by a few pixels (replicate-padding, then cropping back to
the original size) is the cheapest regularizer known to fix much of that. Each (sample, camera) gets
one shift shared by all of its timesteps, so motion between history frames is preserved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vla.model.text_tokenizer import UNK_ID, word_mask


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift ``images`` (B, T, N, C, H, W) by up to ``pad`` pixels per (sample, camera); ``pad=0`` is a no-op."""
    if pad <= 0:
        return images
    B, T, N, C, H, W = images.shape
    # (B, N, T*C, H, W): one shift per sample and camera, shared across time.
    x = images.permute(0, 2, 1, 3, 4, 5).reshape(B * N, T * C, H, W)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    shifts = torch.randint(0, 2 * pad + 1, (2, B * N), generator=generator).to(images.device)
    rows = shifts[0, :, None] + torch.arange(H, device=images.device)  # (BN, H)
    cols = shifts[1, :, None] + torch.arange(W, device=images.device)  # (BN, W)
    batch_index = torch.arange(B * N, device=images.device)[:, None, None, None]
    channel_index = torch.arange(T * C, device=images.device)[None, :, None, None]
    out = padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
    return out.reshape(B, N, T, C, H, W).permute(0, 2, 1, 3, 4, 5)


def drop_words(tokens: Tensor, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each vocabulary word of ``tokens`` (B, L) by UNK with probability ``prob``.

    Word dropout (Iyyer et al. 2015): a phrasing the policy never saw holds words outside its
    vocabulary, which a tokenizer without byte fallback reads as UNK; trained this way, the policy
    learns to act on the words it knows ("... the red cube on the plate") when some are unknown.
    Without it, every held-out phrasing of a task was a new input: 43% success against 84% with the
    training phrasings on the full tabletop suite.
    """
    if prob <= 0:
        return tokens
    drop = word_mask(tokens) & (torch.rand(tokens.shape, generator=generator) < prob).to(tokens.device)
    return tokens.masked_fill(drop, UNK_ID)
