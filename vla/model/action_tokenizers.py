"""Action tokenizers: normalized action chunks (B, H, A) <-> sequences of discrete tokens.

Every tokenizer follows one small protocol (duck-typed, no base class):

- ``vocab_size``: number of token ids the model's action head must produce, specials included;
- ``max_tokens``: the longest token sequence one chunk can need (the model's ``max_action_tokens``);
- ``eos_id`` (``None`` for fixed-length tokenizers) and ``pad_id``;
- ``fit(actions)``: learn from normalized training chunks (N, H, A);
- ``encode(chunks) -> (tokens LongTensor (B, L), mask BoolTensor (B, L))``, ``mask`` True on real
  tokens (EOS included), padded with ``pad_id`` to the longest sequence of the batch;
- ``decode(tokens) -> (actions float32 (B, H, A), DecodeReport)``;
- ``generation_options() -> dict`` of :class:`vla.model.decoding.DecodeOptions` fields;
- ``state_dict()`` / ``from_state_dict(d)``: JSON-safe dicts, so checkpoints never pickle.

The ``continuous`` codec follows the same protocol for the continuous heads (``flow``, ``l1``): its
"tokens" are the normalized chunk itself (float32 (B, H, A)), so training, the runtime and export
treat every head alike.

Actions arrive normalized by the caller so that the dataset's q01..q99 maps to [-1, 1]; values
outside are clipped (as in RT-2 / OpenVLA).

Decoding never fails silently and never invents zero actions: a malformed sequence (wrong length,
special or out-of-range ids, undecodable symbols) is repaired — truncated, or padded by repeating the
last decoded action (binning) or with zero high-frequency DCT coefficients, i.e. a smoother chunk
(FAST) — or, when too little is left to repair, rejected: its rows are NaN and its index is listed in
``DecodeReport.rejected``. Every repair and rejection is counted in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from vla.model.bpe import BytePairEncoding, dct_matrix

SCHEMA_VERSION = 1


@dataclass
class DecodeReport:
    """What :meth:`decode` had to repair or reject, counted per chunk (a chunk can count in several)."""

    num_chunks: int = 0
    wrong_length: int = 0  # chunks truncated or padded to the expected length
    invalid_tokens: int = 0  # special / out-of-range ids dropped (total over the batch)
    missing_eos: int = 0  # variable-length sequences that never ended (decoded up to the limit)
    rejected: list[int] = field(default_factory=list)  # chunk indices returned as NaN
    repaired: int = 0  # chunks that decoded, but only after a repair

    @property
    def ok(self) -> bool:
        """True when every chunk decoded without any repair."""
        return self.repaired == 0 and not self.rejected and self.invalid_tokens == 0

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.num_chunks} chunks: {self.repaired} repaired, {len(self.rejected)} rejected, "
            f"{self.invalid_tokens} invalid tokens, {self.wrong_length} wrong length, "
            f"{self.missing_eos} without EOS"
        )


class ActionTokenizer(Protocol):
    """The protocol shared by every registered tokenizer (see the module docstring)."""

    vocab_size: int
    max_tokens: int
    eos_id: int | None
    pad_id: int

    def fit(self, actions: np.ndarray) -> ActionTokenizer: ...
    def encode(self, chunks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def decode(self, tokens: np.ndarray | torch.Tensor) -> tuple[np.ndarray, DecodeReport]: ...
    def generation_options(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...


def _as_chunks(chunks: np.ndarray | torch.Tensor, horizon: int | None, action_dim: int | None) -> np.ndarray:
    """Validate (B, H, A) chunks and return them clipped to [-1, 1] as float64."""
    array = chunks.detach().cpu().numpy() if isinstance(chunks, torch.Tensor) else np.asarray(chunks)
    if array.ndim != 3:
        raise ValueError(f"action chunks must have shape (B, H, A), got {array.shape}")
    if horizon is not None and (array.shape[1], array.shape[2]) != (horizon, action_dim):
        raise ValueError(
            f"action chunks have shape {array.shape[1:]} per chunk but the tokenizer was fitted on "
            f"(horizon={horizon}, action_dim={action_dim})"
        )
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"action chunks contain NaN/inf (first at chunk {bad[0]}, step {bad[1]}, dim {bad[2]})"
        )
    return np.clip(array.astype(np.float64), -1.0, 1.0)


def _chunk_shape(actions: np.ndarray) -> tuple[int, int]:
    """``(H, A)`` of normalized training chunks (N, H, A), or a ValueError naming the shape."""
    array = np.asarray(actions)
    if array.ndim != 3:
        raise ValueError(f"fit expects normalized chunks (N, H, A), got {array.shape}")
    return int(array.shape[1]), int(array.shape[2])


def _as_token_rows(tokens: np.ndarray | torch.Tensor | Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Token sequences as a list of int64 arrays (accepts a 2-D tensor/array or ragged lists)."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 2:
            raise ValueError(f"token batches must have shape (B, L), got {tokens.shape}")
        return [row.astype(np.int64) for row in tokens]
    return [np.asarray(row, dtype=np.int64).reshape(-1) for row in tokens]


def _pad_batch(rows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max((len(r) for r in rows), default=0)
    tokens = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
        mask[i, : len(row)] = True
    return torch.from_numpy(tokens), torch.from_numpy(mask)


class BinningTokenizer:
    """Per-dimension uniform binning over [-1, 1] (RT-2 / OpenVLA): one token per (step, dim).

    Tokens are laid out step-major (step 0 dims 0..A-1, step 1 ...), ids ``0..num_bins-1`` are bins and
    ``pad_id = num_bins`` pads. The sequence length is fixed (``horizon * action_dim``), so there is
    no EOS. Round-trip error is at most half a bin (``1 / num_bins``) inside [-1, 1].
    """

    name = "binning"
    eos_id: int | None = None

    def __init__(self, num_bins: int = 256, horizon: int | None = None, action_dim: int | None = None):
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins = num_bins
        self.horizon = horizon
        self.action_dim = action_dim
        self.pad_id = num_bins
        self.vocab_size = num_bins + 1

    @property
    def max_tokens(self) -> int:
        self._require_fitted()
        return self.horizon * self.action_dim  # type: ignore[operator]

    def _require_fitted(self) -> None:
        if self.horizon is None or self.action_dim is None:
            raise RuntimeError("the binning tokenizer needs fit(actions) (or horizon/action_dim) first")

    def fit(self, actions: np.ndarray) -> BinningTokenizer:
        """Record the chunk shape; binning itself learns nothing (the caller normalizes)."""
        self.horizon, self.action_dim = _chunk_shape(actions)
        return self

    def encode(self, chunks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, A) normalized chunks -> tokens (B, H*A) and an all-True mask."""
        self._require_fitted()
        array = _as_chunks(chunks, self.horizon, self.action_dim)
        bins = np.floor((array + 1.0) * 0.5 * self.num_bins).astype(np.int64)
        tokens = torch.from_numpy(np.clip(bins, 0, self.num_bins - 1).reshape(len(array), -1))
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    def decode(self, tokens: np.ndarray | torch.Tensor) -> tuple[np.ndarray, DecodeReport]:
        """Tokens -> bin centres (B, H, A); repairs by dropping invalid ids and repeating the last step."""
        self._require_fitted()
        horizon, dims = self.horizon, self.action_dim
        assert horizon is not None and dims is not None
        rows = _as_token_rows(tokens)
        report = DecodeReport(num_chunks=len(rows))
        out = np.full((len(rows), horizon, dims), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            valid = (row >= 0) & (row < self.num_bins)
            repaired = False
            if not valid.all():
                report.invalid_tokens += int((~valid).sum())
                row, repaired = row[valid], True
            whole_steps = min(len(row) // dims, horizon)
            if len(row) != horizon * dims:
                report.wrong_length += 1
                repaired = True
            if whole_steps == 0:  # not even one full action: nothing honest to repeat
                report.rejected.append(i)
                continue
            values = -1.0 + (row[: whole_steps * dims] + 0.5) * (2.0 / self.num_bins)
            out[i, :whole_steps] = values.reshape(whole_steps, dims)
            out[i, whole_steps:] = out[i, whole_steps - 1]  # hold the last decoded action
            report.repaired += int(repaired)
        return out, report

    def generation_options(self) -> dict[str, Any]:
        """Fixed length; never sample the pad id."""
        return {"num_tokens": self.max_tokens, "suppress_tokens": [self.pad_id]}

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": SCHEMA_VERSION,
            "num_bins": self.num_bins,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BinningTokenizer:
        return cls(num_bins=int(state["num_bins"]), horizon=state["horizon"], action_dim=state["action_dim"])


class FastTokenizer:
    """FAST (Pertsch et al., 2025): per-dimension DCT over the chunk, scale and round, then BPE.

    Coefficients are flattened frequency-major (frequency 0 of every dim first), so the informative
    low frequencies come first and the long runs of zero high-frequency coefficients compress well.
    Each integer coefficient ``c`` in ``[-C, C]`` is one base symbol ``c + C``; ``C = ceil(scale *
    sqrt(2H))`` bounds every coefficient of a chunk clipped to [-1, 1], so nothing is ever clipped
    after the DCT. The BPE merges are learned on the training chunks (:mod:`vla.model.bpe`).

    Ids: ``0..bpe.vocab_size-1`` BPE tokens, then ``eos_id``, then ``pad_id``.
    """

    name = "fast"

    def __init__(self, scale: float = 10.0, bpe_vocab_size: int = 1024, min_frequency: int = 2):
        self.scale = float(scale)
        self.bpe_vocab_size = int(bpe_vocab_size)
        self.min_frequency = int(min_frequency)
        self.horizon: int | None = None
        self.action_dim: int | None = None
        self.bpe: BytePairEncoding | None = None
        self._max_tokens: int | None = None

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def coefficient_bound(self) -> int:
        assert self.horizon is not None
        return int(np.ceil(self.scale * np.sqrt(2.0 * self.horizon)))

    @property
    def vocab_size(self) -> int:
        return self._bpe().vocab_size + 2

    @property
    def eos_id(self) -> int:
        return self._bpe().vocab_size

    @property
    def pad_id(self) -> int:
        return self._bpe().vocab_size + 1

    @property
    def max_tokens(self) -> int:
        """Longest sequence allowed (EOS included): the longest training chunk plus a margin of 25%,
        capped by the unmerged worst case ``H * A + 1``."""
        self._bpe()
        assert self._max_tokens is not None
        return self._max_tokens

    def _bpe(self) -> BytePairEncoding:
        if self.bpe is None:
            raise RuntimeError("the FAST tokenizer needs fit(actions) on training chunks first")
        return self.bpe

    # -- DCT <-> symbols -----------------------------------------------------------------------
    def _symbols(self, array: np.ndarray) -> np.ndarray:
        """Clipped chunks (B, H, A) -> base symbols (B, H*A), frequency-major."""
        coefficients = np.einsum("kh,bha->bka", dct_matrix(array.shape[1]), array)
        ints = np.rint(coefficients * self.scale).astype(np.int64)
        return ints.reshape(len(array), -1) + self.coefficient_bound

    def fit(self, actions: np.ndarray) -> FastTokenizer:
        """Learn the BPE merges on normalized training chunks (N, H, A)."""
        array = np.asarray(actions)
        if array.ndim != 3 or len(array) == 0:
            raise ValueError(
                f"fit expects a non-empty array of normalized chunks (N, H, A), got {array.shape}"
            )
        self.horizon, self.action_dim = int(array.shape[1]), int(array.shape[2])
        symbols = self._symbols(_as_chunks(array, None, None))
        base = 2 * self.coefficient_bound + 1
        self.bpe = BytePairEncoding.train(
            list(symbols),
            base_vocab_size=base,
            vocab_size=max(self.bpe_vocab_size, base),
            min_frequency=self.min_frequency,
        )
        longest = max(len(r) for r in self.bpe.encode(list(symbols))) + 1
        self._max_tokens = min(int(np.ceil(longest * 1.25)), self.horizon * self.action_dim + 1)
        return self

    def encode(self, chunks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, A) normalized chunks -> BPE tokens + EOS, padded to the batch's longest; mask."""
        bpe = self._bpe()
        array = _as_chunks(chunks, self.horizon, self.action_dim)
        rows = [np.append(r, self.eos_id) for r in bpe.encode(list(self._symbols(array)))]
        too_long = [i for i, r in enumerate(rows) if len(r) > self.max_tokens]
        if too_long:  # truncating would silently drop coefficients the model should learn
            raise ValueError(
                f"chunks {too_long[:5]} need more than max_tokens={self.max_tokens} FAST tokens; "
                "refit the tokenizer on data that covers them"
            )
        return _pad_batch(rows, self.pad_id)

    def decode(self, tokens: np.ndarray | torch.Tensor) -> tuple[np.ndarray, DecodeReport]:
        """Tokens (up to EOS) -> chunks (B, H, A), repairing or rejecting malformed sequences."""
        bpe = self._bpe()
        horizon, dims = self.horizon, self.action_dim
        assert horizon is not None and dims is not None
        rows = _as_token_rows(tokens)
        report = DecodeReport(num_chunks=len(rows))
        n_coefficients = horizon * dims
        out = np.full((len(rows), horizon, dims), np.nan, dtype=np.float32)
        idct = dct_matrix(horizon).T
        for i, row in enumerate(rows):
            repaired = False
            ends = np.flatnonzero(row == self.eos_id)
            if len(ends):
                row = row[: ends[0]]
            else:
                report.missing_eos += 1
                repaired = True
            valid = (row >= 0) & (row < bpe.vocab_size)
            if not valid.all():
                report.invalid_tokens += int((~valid).sum())
                row, repaired = row[valid], True
            symbols = bpe.decode(row)
            if len(symbols) != n_coefficients:
                report.wrong_length += 1
                repaired = True
            # Without the DC term of every dimension the chunk's level is unknown: reject.
            if len(symbols) < dims:
                report.rejected.append(i)
                continue
            ints = np.zeros(n_coefficients, dtype=np.float64)  # missing = zero high frequencies
            kept = symbols[:n_coefficients]
            ints[: len(kept)] = kept - self.coefficient_bound
            coefficients = ints.reshape(horizon, dims) / self.scale
            out[i] = (idct @ coefficients).astype(np.float32)
            report.repaired += int(repaired)
        return out, report

    def generation_options(self) -> dict[str, Any]:
        """Stop at EOS, never sample the pad id."""
        return {
            "num_tokens": self.max_tokens,
            "eos_token": self.eos_id,
            "pad_token": self.pad_id,
            "suppress_tokens": [self.pad_id],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": SCHEMA_VERSION,
            "scale": self.scale,
            "bpe_vocab_size": self.bpe_vocab_size,
            "min_frequency": self.min_frequency,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "max_tokens": self._max_tokens,
            "bpe": None if self.bpe is None else self.bpe.to_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FastTokenizer:
        tokenizer = cls(state["scale"], state["bpe_vocab_size"], state["min_frequency"])
        tokenizer.horizon, tokenizer.action_dim = state["horizon"], state["action_dim"]
        tokenizer._max_tokens = state["max_tokens"]
        if state.get("bpe") is not None:
            tokenizer.bpe = BytePairEncoding.from_dict(state["bpe"])
        return tokenizer


class ContinuousCodec:
    """The codec of the continuous heads: a normalized chunk is its own representation.

    ``encode`` clips to [-1, 1] (as the discrete tokenizers do) and returns float32 (B, H, A) with an
    all-True (B, H) step mask; ``decode`` returns the predicted chunk, rejecting (NaN rows, listed
    in the report) any chunk with a non-finite value, so a diverged prediction never reaches a robot.
    """

    name = "continuous"
    eos_id: int | None = None
    pad_id = 0
    vocab_size = 0

    def __init__(self, horizon: int | None = None, action_dim: int | None = None):
        self.horizon, self.action_dim = horizon, action_dim

    @property
    def max_tokens(self) -> int:
        if self.horizon is None:
            raise RuntimeError("the continuous codec needs fit(actions) (or horizon/action_dim) first")
        return self.horizon

    def fit(self, actions: np.ndarray) -> ContinuousCodec:
        """Record the chunk shape (the caller normalizes)."""
        self.horizon, self.action_dim = _chunk_shape(actions)
        return self

    def encode(self, chunks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = _as_chunks(chunks, self.horizon, self.action_dim).astype(np.float32)
        return torch.from_numpy(array), torch.ones(array.shape[:2], dtype=torch.bool)

    def decode(self, tokens: np.ndarray | torch.Tensor) -> tuple[np.ndarray, DecodeReport]:
        array = (
            tokens.detach().cpu().float().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        )
        if array.ndim != 3 or (
            self.horizon is not None and array.shape[1:] != (self.horizon, self.action_dim)
        ):
            raise ValueError(
                f"predicted chunks must have shape (B, {self.horizon}, {self.action_dim}), got {array.shape}"
            )
        out = np.array(array, dtype=np.float32)
        report = DecodeReport(num_chunks=len(out))
        bad = ~np.isfinite(out).all(axis=(1, 2))
        report.rejected = np.flatnonzero(bad).tolist()
        out[bad] = np.nan
        return np.clip(out, -1.0, 1.0), report

    def generation_options(self) -> dict[str, Any]:
        return {"num_tokens": self.max_tokens}

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": SCHEMA_VERSION,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ContinuousCodec:
        return cls(horizon=state["horizon"], action_dim=state["action_dim"])


# name -> class; each class takes its options as keyword arguments and has from_state_dict().
ACTION_TOKENIZERS: dict[str, type] = {
    "binning": BinningTokenizer,
    "fast": FastTokenizer,
    "continuous": ContinuousCodec,
}


def make_action_tokenizer(name: str, **options: Any) -> ActionTokenizer:
    """A fresh (unfitted) tokenizer by registry name."""
    if name not in ACTION_TOKENIZERS:
        raise ValueError(f"unknown action tokenizer {name!r}; choose one of {sorted(ACTION_TOKENIZERS)}")
    return ACTION_TOKENIZERS[name](**options)


def action_tokenizer_from_state_dict(state: dict[str, Any]) -> ActionTokenizer:
    """Rebuild a tokenizer saved with ``state_dict()`` (the dict names its kind)."""
    name = state.get("name")
    if name not in ACTION_TOKENIZERS:
        raise ValueError(
            f"saved action tokenizer has unknown name {name!r}; known: {sorted(ACTION_TOKENIZERS)}"
        )
    if state.get("version") != SCHEMA_VERSION:
        raise ValueError(
            f"saved {name} tokenizer has version {state.get('version')}, expected {SCHEMA_VERSION}"
        )
    return ACTION_TOKENIZERS[name].from_state_dict(state)
