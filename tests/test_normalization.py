"""Normalization: exact round trips, the documented ranges, and errors that name the feature."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla.normalization import MIN_SCALE, NormalizationError, Normalizer, scale_images


def _stats(rng: np.random.Generator, dim: int) -> dict[str, np.ndarray]:
    x = rng.normal(2.0, 3.0, size=(1000, dim)).astype(np.float32)
    return {
        "mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0),
        "q01": np.quantile(x, 0.01, axis=0), "q99": np.quantile(x, 0.99, axis=0),
    }  # fmt: skip


@pytest.fixture
def normalizer() -> Normalizer:
    rng = np.random.default_rng(0)
    stats = {"observation.state": _stats(rng, 5), "action": _stats(rng, 3), "observation.images.front": {}}
    return Normalizer.from_store_stats(stats, {"observation.state": "mean_std", "action": "quantile"})


def test_round_trip_numpy_and_torch(normalizer: Normalizer) -> None:
    x = np.random.default_rng(1).normal(0, 5, size=(4, 2, 5)).astype(np.float32)
    y = normalizer.normalize("observation.state", x)
    np.testing.assert_allclose(normalizer.unnormalize("observation.state", y), x, rtol=1e-5, atol=1e-5)
    xt = torch.from_numpy(x)
    yt = normalizer.normalize("observation.state", xt)
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-6, atol=1e-6)


def test_actions_quantiles_map_to_unit_interval(normalizer: Normalizer) -> None:
    stats = normalizer.stats["action"]
    q = np.stack([stats["q01"], stats["q99"]]).astype(np.float32)
    np.testing.assert_allclose(normalizer.normalize("action", q), [[-1, -1, -1], [1, 1, 1]], atol=1e-5)


def test_state_mean_std(normalizer: Normalizer) -> None:
    stats = normalizer.stats["observation.state"]
    z = normalizer.normalize("observation.state", (stats["mean"] + stats["std"]).astype(np.float32)[None])
    np.testing.assert_allclose(z, np.ones((1, 5)), atol=1e-5)


def test_constant_dimension_is_floored_not_divided_by_zero() -> None:
    stats = {"action": {"q01": np.array([1.0, 0.0]), "q99": np.array([1.0, 2.0])}}
    n = Normalizer.from_store_stats(stats, {"action": "quantile"})
    out = n.normalize("action", np.array([[1.0 + MIN_SCALE, 1.0]], dtype=np.float32))
    assert np.isfinite(out).all() and abs(out[0, 0] - 1.0) < 1e-4


def test_missing_stats_is_an_error_naming_the_feature(normalizer: Normalizer) -> None:
    with pytest.raises(NormalizationError, match="observation.state"):
        Normalizer.from_store_stats(
            {"action": {"q01": [0.0], "q99": [1.0]}}, {"observation.state": "mean_std"}
        )
    with pytest.raises(NormalizationError, match="lack"):
        Normalizer.from_store_stats({"action": {"q01": [0.0]}}, {"action": "quantile"})
    with pytest.raises(NormalizationError, match="observation.environment_state"):
        normalizer.normalize("observation.environment_state", np.zeros((1, 5), dtype=np.float32))


def test_wrong_dimension_and_nan_stats_are_errors(normalizer: Normalizer) -> None:
    with pytest.raises(NormalizationError, match="last dimension 4"):
        normalizer.normalize("observation.state", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(NormalizationError, match="NaN"):
        Normalizer.from_store_stats({"action": {"q01": [np.nan], "q99": [1.0]}}, {"action": "quantile"})


def test_json_round_trip_and_mismatch_check(normalizer: Normalizer) -> None:
    data = json.loads(json.dumps(normalizer.to_dict()))
    again = Normalizer.from_dict(data)
    x = np.ones((3, 3), dtype=np.float32)
    np.testing.assert_array_equal(again.normalize("action", x), normalizer.normalize("action", x))
    store_like = {f: dict(s) for f, s in normalizer.stats.items()}
    normalizer.check_matches(store_like)  # identical: no error
    store_like["action"] = {**store_like["action"], "q99": store_like["action"]["q99"] + 0.5}
    with pytest.raises(NormalizationError, match="'action'.*'q99'"):
        normalizer.check_matches(store_like, "store X")
    with pytest.raises(NormalizationError, match="no statistics for feature 'observation.state'"):
        normalizer.check_matches({"action": store_like["action"]})


def test_images_scale_to_unit_range_and_refuse_floats() -> None:
    images = torch.tensor([0, 128, 255], dtype=torch.uint8)
    np.testing.assert_allclose(scale_images(images).numpy(), [0.0, 128 / 255, 1.0])
    with pytest.raises(NormalizationError, match="uint8"):
        scale_images(images.float())
