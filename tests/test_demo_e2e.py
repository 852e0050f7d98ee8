"""End to end: a shortened `vla demo` (= `vla benchmark suite=demo`: record -> train -> eval -> results)
and every artifact it promises."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from vla.data import TrajectoryStore, validate_store
from vla.demo import main as demo_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert demo_main(["quick=true", f"out={out}"]) == 0
    return out


def test_store_validates(demo_out):
    store_path = demo_out / "data.zarr"
    assert validate_store(store_path) == []
    tasks = {row["group"] for row in json.loads((demo_out / "results.json").read_text())["per_task"]}
    # the demo env's tasks, each evaluated: three families of the suite, three colours each
    assert tasks == {
        f"{family}-{colour}" for family in ("reach", "press", "pick") for colour in ("red", "green", "blue")
    }
    with TrajectoryStore.open(store_path, mode="r") as store:
        assert store.num_episodes == 2 * len(tasks)  # quick: 2 per task
        assert {store.episode_meta(i).extra["task"] for i in range(store.num_episodes)} == tasks
        seeds = {store.episode_meta(i).seed for i in range(store.num_episodes)}
        assert all(seed < 1_000_000 for seed in seeds)  # training seeds only


def test_checkpoint_loads_and_predicts(demo_out):
    from vla.policies import load_policy

    policy = load_policy(demo_out / "train", device="cpu")
    spec = policy.spec
    observation = {key: np.zeros(spec.image_shape, np.uint8) for key in spec.camera_keys}
    observation["observation.state"] = np.zeros(spec.state_dim, np.float32)
    observation["instruction"] = "touch the red block"
    chunk = policy.predict_chunk(observation)
    assert chunk.shape == (spec.chunk_size, spec.action_dim)


def test_report_has_every_field(demo_out):
    report = json.loads((demo_out / "eval" / "report.json").read_text())
    for field in ("protocol", "episodes", "per_task", "overall", "timing"):
        assert field in report, field
    protocol = report["protocol"]
    # The protocol's own keys, each with a value (a key name found anywhere in the JSON is not enough).
    assert protocol["episodes_per_task"] == 1 and protocol["phrasings"] == ["train", "heldout"]
    assert protocol["replan_every"] == protocol["policy_spec"]["replan_every"] == 2  # tiny128's own
    assert protocol["checkpoint"] == str(demo_out / "train")
    assert set(protocol["seeds"]) == {row["group"] for row in report["per_task"]}
    for task, seeds in protocol["seeds"].items():
        assert len(seeds) == 1 and {e["seed"] for e in report["episodes"] if e["task"] == task} == set(seeds)
    assert {e["phrasing"] for e in report["episodes"]} == {"train", "heldout"}
    assert all(e["seed"] >= 1_000_000 for e in report["episodes"])  # evaluation seeds only
    assert (demo_out / "eval" / "report.md").read_text().count("|") > 10
    png = (demo_out / "eval" / "success.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "| reach-red |" in (demo_out / "results.md").read_text()


def test_video_decodes(demo_out):
    videos = sorted((demo_out / "eval" / "videos").glob("*.mp4"))
    assert videos, "no video written"
    frames = iio.imread(videos[0], plugin="pyav")
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] == 3
