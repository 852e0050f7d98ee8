"""Per-feature statistics in one streaming pass with bounded memory.

Images: exact per-channel 256-bin histograms give mean, std, min, max and quantiles (pixel units,
0..255). Other features: running moments (Chan's parallel update) per dimension, min and max, and
quantiles from a uniform bottom-k sample of at most ``RESERVOIR_ROWS`` rows (seeded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vla.data.store import TrajectoryStore

STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
RESERVOIR_ROWS = 100_000
BLOCK_FRAMES = 2048


def _histogram_stats(hist: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of per-channel histograms ``hist`` (C, 256)."""
    values = np.arange(hist.shape[1], dtype=np.float64)
    count = hist.sum(axis=1, keepdims=True)
    mean = (hist * values).sum(axis=1) / count[:, 0]
    var = (hist * (values[None] - mean[:, None]) ** 2).sum(axis=1) / count[:, 0]
    cdf = np.cumsum(hist, axis=1) / count

    def quantile(q: float) -> np.ndarray:
        return np.argmax(cdf >= q, axis=1).astype(np.float64)

    present = hist > 0
    return {
        "mean": mean,
        "std": np.sqrt(var),
        "min": np.argmax(present, axis=1).astype(np.float64),
        "max": (hist.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)).astype(np.float64),
        "q01": quantile(0.01),
        "q99": quantile(0.99),
    }


class _RunningStats:
    """Moments, extremes and a bounded uniform sample of rows (D,) streamed block by block."""

    def __init__(self, dim: int, seed: int) -> None:
        self.count = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.rng = np.random.default_rng(seed)
        self.keys = np.zeros(0)
        self.sample = np.zeros((0, dim))

    def update(self, block: np.ndarray) -> None:
        block = block.astype(np.float64)
        n = len(block)
        mean, m2 = block.mean(axis=0), ((block - block.mean(axis=0)) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total
        self.min = np.minimum(self.min, block.min(axis=0))
        self.max = np.maximum(self.max, block.max(axis=0))
        # Bottom-k sampling: the rows with the k smallest random keys are a uniform sample.
        keys = np.concatenate([self.keys, self.rng.random(n)])
        rows = np.concatenate([self.sample, block])
        if len(keys) > RESERVOIR_ROWS:
            keep = np.argpartition(keys, RESERVOIR_ROWS)[:RESERVOIR_ROWS]
            keys, rows = keys[keep], rows[keep]
        self.keys, self.sample = keys, rows

    def result(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "std": np.sqrt(self.m2 / max(self.count, 1)),
            "min": self.min,
            "max": self.max,
            "q01": np.quantile(self.sample, 0.01, axis=0),
            "q99": np.quantile(self.sample, 0.99, axis=0),
        }


def compute_stats(store: TrajectoryStore, seed: int = 0) -> dict[str, Any]:
    """Statistics of every feature over all committed frames, as a JSON-ready document."""
    end = store.num_frames
    if end == 0:
        raise ValueError(f"{store.path}: no committed frames to compute statistics from")
    features: dict[str, Any] = {}
    for name, spec in store.schema.features.items():
        array = store.array(f"data/{name}")
        image = spec.kind == "image"
        hist = np.zeros((spec.shape[-1], 256), dtype=np.int64) if image else None
        running = None if image else _RunningStats(int(np.prod(spec.shape, dtype=np.int64)), seed)
        step = max(int(array.chunks[0]), BLOCK_FRAMES if not image else int(array.chunks[0]))
        for start in range(0, end, step):
            block = store.read_rows(name, start, min(start + step, end))
            if image:
                for channel in range(block.shape[-1]):
                    hist[channel] += np.bincount(block[..., channel].ravel(), minlength=256)
            else:
                running.update(block.reshape(len(block), -1))
        values = _histogram_stats(hist) if image else running.result()
        shape = (spec.shape[-1],) if image else spec.shape
        features[name] = {k: np.asarray(values[k]).reshape(shape).tolist() for k in STAT_NAMES}
    return {"num_frames": end, "features": features}


def stats_from_json(doc: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """``{feature: {stat: float32 array}}`` from the saved document."""
    return {
        name: {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}
        for name, values in doc["features"].items()
    }
