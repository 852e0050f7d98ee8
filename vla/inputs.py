"""Observations -> model inputs, the same way for training and inference.

Two stages keep the data path fast:

- :class:`Collator` runs in the DataLoader workers: it stacks samples, normalizes state and actions
  (:func:`model_state`), and tokenizes actions and instructions (:func:`encode_text`). Images stay
  uint8 (4x less to copy and pin).
- :func:`to_model_inputs` runs in the training process: it moves the batch to the device and only
  there scales images to float in [0, 1] and puts them in the model's (B, T, N_cam, 3, H, W) layout.

The policy runtime (:mod:`vla.policies.runtime`) prepares its observations with the same
:func:`model_state`, :func:`encode_text` and :func:`to_model_inputs`, so training and inference
feed the model identically. This module sits below training and the runtime (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vla.features import ACTION_KEY, INSTRUCTION_KEY, STATE_KEY
from vla.normalization import Normalizer, scale_images

log = logging.getLogger(__name__)

OBS_IS_PAD = "observation_is_pad"


@dataclass
class Collator:
    """Turns a list of :class:`vla.data.TrajectoryDataset` samples into one batch of tensors.

    ``action_tokenizer`` may be None (inference batches carry no actions).
    """

    camera_keys: tuple[str, ...]
    normalizer: Normalizer
    text_tokenizer: Any
    max_text_len: int
    action_tokenizer: Any = None
    state_indices: Sequence[int] | None = None  # the state entries the model reads (None: all)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        # Samples hold numpy arrays or CPU tensors; np.asarray views either without copying.
        images = np.stack([np.stack([np.asarray(s[k]) for k in self.camera_keys], axis=1) for s in samples])
        state = np.stack([np.asarray(s[STATE_KEY]) for s in samples]).astype(np.float32)
        batch = {
            "images": torch.from_numpy(images),
            "state": torch.from_numpy(model_state(self.normalizer, state, self.state_indices)),
            "obs_is_pad": torch.from_numpy(
                np.stack([np.asarray(s[OBS_IS_PAD], dtype=bool) for s in samples])
            ),
        }
        batch.update(
            encode_text(self.text_tokenizer, [str(s[INSTRUCTION_KEY]) for s in samples], self.max_text_len)
        )
        if self.action_tokenizer is not None:
            actions = np.stack([np.asarray(s[ACTION_KEY]) for s in samples]).astype(np.float32)
            normalized = self.normalizer.normalize(ACTION_KEY, actions).astype(np.float32)
            # Token ids (B, L) for a token head; the clipped chunk itself (B, H, A) for a continuous one.
            targets, mask = self.action_tokenizer.encode(normalized)
            batch.update(action_tokens=targets, token_mask=mask.bool(), action=torch.from_numpy(normalized))
        return batch


def model_state(normalizer: Normalizer, state: np.ndarray, indices: Sequence[int] | None) -> np.ndarray:
    """Raw state (..., D) -> what the model reads: normalized, then the kept entries (float32)."""
    normalized = normalizer.normalize(STATE_KEY, state).astype(np.float32)
    return normalized if indices is None else np.ascontiguousarray(normalized[..., list(indices)])


def encode_text(text_tokenizer: Any, instructions: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """Instructions -> ``text_tokens`` (B, L) and ``text_is_pad`` (B, L)."""
    tokens, is_pad = text_tokenizer.encode(instructions, max_len)
    return {"text_tokens": torch.as_tensor(tokens).long(), "text_is_pad": torch.as_tensor(is_pad).bool()}


def text_positions(text_tokenizer: Any, instructions: Iterable[str], max_len: int) -> int:
    """The text positions a batch of ``instructions`` needs: their longest id sequence (BOS
    included), at most ``max_len``.

    Why: training pads every instruction to one fixed length (a compiled loss keeps one shape), and
    padding is masked out of attention and pooling, so positions past the longest training
    instruction only cost time. The demo's instructions take 8 ids of ``max_text_len`` 16; trimming
    them shortens every training sequence from 53 tokens to 45. The model takes any length up to
    ``max_text_len``, so inference still pads to that.
    """
    lengths = {text: len(text_tokenizer.token_ids(text, limit=max_len + 1)) for text in set(instructions)}
    cut = sorted(text for text, count in lengths.items() if count > max_len)
    if cut:  # the model never reads their last words: say so rather than train on them silently
        log.warning(
            "%d instruction(s) take more than max_text_len=%d ids and are cut, e.g. %r",
            len(cut), max_len, cut[0],
        )  # fmt: skip
    return min(max(lengths.values(), default=max_len), max_len)


def to_model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The model's ``obs`` dict on ``device``: images float (B, T, N, 3, H, W) in [0, 1]."""
    non_blocking = device.type == "cuda"
    images = batch["images"].to(device, non_blocking=non_blocking)
    return {
        "images": scale_images(images).permute(0, 1, 2, 5, 3, 4).contiguous(),
        "state": batch["state"].to(device, non_blocking=non_blocking),
        "obs_is_pad": batch["obs_is_pad"].to(device, non_blocking=non_blocking),
        "text_tokens": batch["text_tokens"].to(device, non_blocking=non_blocking),
        "text_is_pad": batch["text_is_pad"].to(device, non_blocking=non_blocking),
    }
