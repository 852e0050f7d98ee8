"""A small byte-pair encoding over integer symbols, and the orthonormal DCT-II matrix, for FAST.

FAST's reference implementation maps DCT coefficients to unicode characters and trains Hugging Face
``tokenizers``' BPE. The alphabet here is small (a few hundred symbols) and the corpus is a few
hundred thousand symbols, so a vectorized numpy BPE trains in seconds, needs no extra package and
stores as plain JSON (a list of merges).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

_SEPARATOR = -1  # between sequences in the flat working array; never merged


@functools.lru_cache(maxsize=16)
def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (n, n): ``D @ x`` equals ``scipy.fft.dct(x, norm="ortho")``
    and ``D.T`` is its inverse."""
    k = np.arange(n)[:, None]
    h = np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * h + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    matrix.setflags(write=False)
    return matrix


def _flatten(sequences: Sequence[np.ndarray]) -> np.ndarray:
    parts: list[np.ndarray] = []
    for seq in sequences:
        parts.append(np.asarray(seq, dtype=np.int64).reshape(-1))
        parts.append(np.array([_SEPARATOR], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _split(flat: np.ndarray) -> list[np.ndarray]:
    ends = np.flatnonzero(flat == _SEPARATOR)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [flat[s:e] for s, e in zip(starts, ends, strict=True)]


def _merge(flat: np.ndarray, left: int, right: int, new_id: int) -> np.ndarray:
    """Replace every non-overlapping (left, right) pair, scanning left to right, by ``new_id``."""
    idx = np.flatnonzero((flat[:-1] == left) & (flat[1:] == right))
    if left == right and len(idx) > 1:
        # In a run such as x x x only the pairs at even offsets from the run's start merge.
        order = np.arange(len(idx))
        run_start = np.ones(len(idx), dtype=bool)
        run_start[1:] = idx[1:] != idx[:-1] + 1
        first = np.maximum.accumulate(np.where(run_start, order, 0))
        idx = idx[(order - first) % 2 == 0]
    if len(idx) == 0:
        return flat
    flat = flat.copy()
    flat[idx] = new_id
    return np.delete(flat, idx + 1)


class BytePairEncoding:
    """BPE over symbols ``0..base_vocab_size-1``; merge ``k`` creates the id ``base_vocab_size + k``."""

    def __init__(self, base_vocab_size: int, merges: Sequence[tuple[int, int]]):
        self.base_vocab_size = int(base_vocab_size)
        self.merges = [(int(a), int(b)) for a, b in merges]
        self._expansions: list[np.ndarray] = [
            np.array([i], dtype=np.int64) for i in range(self.base_vocab_size)
        ]
        for a, b in self.merges:
            if not (0 <= a < len(self._expansions) and 0 <= b < len(self._expansions)):
                raise ValueError(f"BPE merge ({a}, {b}) refers to an id not defined before it")
            self._expansions.append(np.concatenate([self._expansions[a], self._expansions[b]]))
        self._rank: np.ndarray | None = None  # dense (V, V) table of merge ranks, built on first encode

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + len(self.merges)

    @classmethod
    def train(
        cls, sequences: Sequence[np.ndarray], base_vocab_size: int, vocab_size: int, min_frequency: int = 2
    ) -> BytePairEncoding:
        """Greedily merge the most frequent adjacent pair until ``vocab_size`` ids exist or no pair
        occurs ``min_frequency`` times."""
        flat = _flatten(sequences)
        if len(flat) and (flat[flat != _SEPARATOR].min() < 0 or flat.max() >= base_vocab_size):
            raise ValueError(f"BPE training symbols must lie in [0, {base_vocab_size})")
        merges: list[tuple[int, int]] = []
        next_id = base_vocab_size
        while next_id < vocab_size and len(flat) > 1:
            left, right = flat[:-1], flat[1:]
            both = (left != _SEPARATOR) & (right != _SEPARATOR)
            keys = left[both] * vocab_size + right[both]
            if len(keys) == 0:
                break
            counts = np.bincount(keys)
            best = int(counts.argmax())
            if counts[best] < min_frequency:
                break
            a, b = divmod(best, vocab_size)
            flat = _merge(flat, a, b, next_id)
            merges.append((a, b))
            next_id += 1
        return cls(base_vocab_size, merges)

    def _rank_table(self) -> np.ndarray:
        if self._rank is None:
            rank = np.full((self.vocab_size, self.vocab_size), np.iinfo(np.int32).max, dtype=np.int32)
            for k, (a, b) in enumerate(self.merges):
                rank[a, b] = k
            self._rank = rank
        return self._rank

    def encode(self, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Base-symbol sequences -> token sequences, applying the merges in training order.

        Instead of scanning for every merge, each round jumps to the lowest-ranked merge present that
        is later than the last one applied, which gives the same result as applying all in order.
        """
        flat = _flatten(sequences)
        if len(flat) and (flat[flat != _SEPARATOR].min() < 0 or flat.max() >= self.base_vocab_size):
            raise ValueError(f"BPE input symbols must lie in [0, {self.base_vocab_size})")
        if not self.merges:
            return _split(flat)
        rank = self._rank_table()
        last = -1
        while len(flat) > 1:
            left, right = flat[:-1], flat[1:]
            both = (left != _SEPARATOR) & (right != _SEPARATOR)
            ranks = np.where(both, rank[np.maximum(left, 0), np.maximum(right, 0)], np.iinfo(np.int32).max)
            ranks = np.where(ranks > last, ranks, np.iinfo(np.int32).max)
            k = int(ranks.min())
            if k == np.iinfo(np.int32).max:
                break
            a, b = self.merges[k]
            flat = _merge(flat, a, b, self.base_vocab_size + k)
            last = k
        return _split(flat)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids (all < vocab_size; the caller filters) -> base symbols."""
        if len(tokens) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self._expansions[int(t)] for t in tokens])

    def to_dict(self) -> dict[str, Any]:
        return {"base_vocab_size": self.base_vocab_size, "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BytePairEncoding:
        return cls(int(state["base_vocab_size"]), [tuple(m) for m in state["merges"]])
