"""LeRobot <-> trajectory store conversion: round trips, codec loss, reruns after interruptions."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub, even from lerobot's imports
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot", reason="the lerobot extra is not installed")

from vla.data.schema import FeatureSpec, Schema
from vla.data.store import TrajectoryStore
from vla.features import ACTION_KEY, STATE_KEY, camera_key
from vla.interop import from_lerobot
from vla.interop.cli import main as convert_main
from vla.interop.from_lerobot import SOURCE_EPISODE_FIELD, convert_from_lerobot
from vla.interop.synthetic import psnr, smooth_frames, write_lerobot_dataset
from vla.interop.to_lerobot import convert_to_lerobot

REPO = "local/interop_test"
FRONT = camera_key("front")
MIN_PSNR_DB = 30.0  # AV1 at lerobot's default quality on smooth 32x32 frames


@pytest.fixture(scope="module")
def lerobot_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lerobot") / "source"
    written = write_lerobot_dataset(
        root, REPO, num_episodes=3, length=20, image_size=32, state_dim=5, action_dim=4
    )
    return root, written


def _sources(store: TrajectoryStore) -> list[int]:
    return [int(meta.extra[SOURCE_EPISODE_FIELD]) for meta in store.episodes_meta()]


def test_from_lerobot_keeps_every_frame_and_feature(lerobot_source, tmp_path):
    root, written = lerobot_source
    report = convert_from_lerobot(REPO, root, tmp_path / "store.zarr", progress=False)
    assert report.converted == [0, 1, 2] and report.skipped == []

    store = TrajectoryStore.open(tmp_path / "store.zarr")
    assert store.fps == 10 and store.robot_type == "synthetic_arm"
    assert {k: s.kind for k, s in store.schema.features.items()} == {
        FRONT: "image",
        STATE_KEY: "state",
        ACTION_KEY: "action",
        "next.reward": "other",
    }
    assert store.schema.features[STATE_KEY].names == tuple(f"joint_{i}" for i in range(5))
    assert store.num_episodes == 3
    for index, source in enumerate(written["episodes"]):
        meta, episode = store.episode_meta(index), store.read_episode(index)
        assert meta.length == 20 and meta.instruction == source["task"]
        for key in (STATE_KEY, ACTION_KEY, "next.reward"):
            np.testing.assert_array_equal(episode[key], source[key])  # low-dimensional: exact
        quality = psnr(source[FRONT], episode[FRONT])
        print(f"from-lerobot episode {index}: PSNR {quality:.1f} dB")
        assert quality > MIN_PSNR_DB


def test_from_lerobot_rerun_completes_without_duplicates(lerobot_source, tmp_path):
    root, _ = lerobot_source
    out = tmp_path / "store.zarr"
    first = convert_from_lerobot(REPO, root, out, max_episodes=1, progress=False)
    assert first.converted == [0] and first.store_episodes == 1
    second = convert_from_lerobot(REPO, root, out, progress=False)
    assert second.converted == [1, 2] and second.skipped == [0]
    third = convert_from_lerobot(REPO, root, out, progress=False)
    assert third.converted == [] and third.store_episodes == 3
    assert _sources(TrajectoryStore.open(out)) == [0, 1, 2]


def test_from_lerobot_interrupted_mid_episode_is_finished_by_a_rerun(lerobot_source, tmp_path, monkeypatch):
    root, written = lerobot_source
    out = tmp_path / "store.zarr"
    real_decode, calls = from_lerobot.decode_frames, []

    def decode_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second episode's video: simulate a crash half-way through
            raise KeyboardInterrupt
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(from_lerobot, "decode_frames", decode_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert_from_lerobot(REPO, root, out, progress=False)
    assert _sources(TrajectoryStore.open(out)) == [0]

    monkeypatch.setattr(from_lerobot, "decode_frames", real_decode)
    convert_from_lerobot(REPO, root, out, progress=False)
    store = TrajectoryStore.open(out)
    assert _sources(store) == [0, 1, 2]
    np.testing.assert_array_equal(store.read_episode(1)[ACTION_KEY], written["episodes"][1][ACTION_KEY])


def _write_store(path: Path, lengths: list[int]) -> TrajectoryStore:
    schema = Schema(
        {
            FRONT: FeatureSpec("uint8", (32, 32, 3), "image"),
            STATE_KEY: FeatureSpec("float32", (6,), "state", tuple(f"q{i}" for i in range(6))),
            ACTION_KEY: FeatureSpec("float32", (4,), "action", tuple(f"a{i}" for i in range(4))),
            "gripper_closed": FeatureSpec("float64", (1,), "other"),
        }
    )
    rng = np.random.default_rng(1)
    store = TrajectoryStore.create(path, schema, fps=20, robot_type="tabletop_arm")
    with store, store.writer() as writer:
        for index, length in enumerate(lengths):
            images = smooth_frames(index, length, 32)
            writer.start_episode(f"instruction number {index}", env_id="test", seed=index)
            for t in range(length):
                writer.add_frame(
                    {
                        FRONT: images[t],
                        STATE_KEY: rng.normal(size=6),
                        ACTION_KEY: rng.normal(size=4),
                        "gripper_closed": np.array([t % 2], dtype=np.float64),
                    }
                )
            writer.commit_episode(success=True)
    return TrajectoryStore.open(path)


def test_store_to_lerobot_to_store(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    original = _write_store(tmp_path / "original.zarr", [18, 22, 20])
    convert_to_lerobot(tmp_path / "original.zarr", tmp_path / "lerobot", "local/from_store", progress=False)

    dataset = LeRobotDataset("local/from_store", root=tmp_path / "lerobot", video_backend="pyav")
    assert (
        dataset.meta.total_episodes == 3 and dataset.fps == 20 and dataset.meta.robot_type == "tabletop_arm"
    )
    assert dataset.meta.features[STATE_KEY]["names"] == [f"q{i}" for i in range(6)]
    assert dataset.meta.features[FRONT]["dtype"] == "video"
    sample = dataset[18 + 5]  # episode 1, frame 5, decoded by lerobot itself
    assert sample["task"] == "instruction number 1"
    np.testing.assert_array_equal(sample[ACTION_KEY].numpy(), original.read_episode(1)[ACTION_KEY][5])
    lerobot_image = (sample[FRONT].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert psnr(original.read_episode(1)[FRONT][5], lerobot_image) > MIN_PSNR_DB

    convert_from_lerobot("local/from_store", tmp_path / "lerobot", tmp_path / "back.zarr", progress=False)
    back = TrajectoryStore.open(tmp_path / "back.zarr")
    assert back.schema == original.schema and back.fps == original.fps
    assert [m.length for m in back.episodes_meta()] == [18, 22, 20]
    assert [m.instruction for m in back.episodes_meta()] == [m.instruction for m in original.episodes_meta()]
    for index in range(3):
        before, after = original.read_episode(index), back.read_episode(index)
        for key in (STATE_KEY, ACTION_KEY, "gripper_closed"):
            np.testing.assert_array_equal(after[key], before[key])
        quality = psnr(before[FRONT], after[FRONT])
        print(f"store -> lerobot -> store episode {index}: PSNR {quality:.1f} dB")
        assert quality > MIN_PSNR_DB


def test_to_lerobot_rerun_and_interrupted_output(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    _write_store(tmp_path / "store.zarr", [12, 12, 12])
    out = tmp_path / "lerobot"
    args = [str(tmp_path / "store.zarr"), f"out={out}", "repo_id=local/rerun", "quiet=true"]
    assert convert_main(["to-lerobot", *args, "max_episodes=2"]) == 0
    assert LeRobotDatasetMetadata("local/rerun", root=out).total_episodes == 2

    # An interrupted run leaves only <out>.partial behind; the next run discards it and finishes.
    stale = out.with_name(out.name + ".partial")
    (stale / "meta").mkdir(parents=True)
    (stale / "meta" / "info.json").write_text("{not json")
    assert convert_main(["to-lerobot", *args]) == 0
    meta = LeRobotDatasetMetadata("local/rerun", root=out)
    assert meta.total_episodes == 3 and meta.total_frames == 36 and not stale.exists()
    assert sorted(meta.episodes["episode_index"]) == [0, 1, 2]

    stamp = (out / "meta" / "info.json").stat().st_mtime_ns
    assert convert_main(["to-lerobot", *args]) == 0  # already complete: nothing rewritten
    assert (out / "meta" / "info.json").stat().st_mtime_ns == stamp


def test_cli_reports_bad_input(tmp_path, capsys):
    assert convert_main(["from-lerobot", REPO, f"root={tmp_path / 'missing'}", f"out={tmp_path / 's'}"]) == 1
    assert "no meta/info.json" in capsys.readouterr().err
    (tmp_path / "not_lerobot").mkdir()
    (tmp_path / "not_lerobot" / "file.txt").write_text("x")
    _write_store(tmp_path / "store.zarr", [5])
    code = convert_main(
        [
            "to-lerobot",
            str(tmp_path / "store.zarr"),
            f"out={tmp_path / 'not_lerobot'}",
            "repo_id=local/x",
        ]
    )
    assert code == 1 and "not a LeRobot dataset" in capsys.readouterr().err
