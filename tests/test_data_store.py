"""TrajectoryStore: round trip, frame checking, episode control, locking, concurrent readers, stats."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_frame, data_schema, store_held_elsewhere, write_data_episodes

from vla.data import (
    EpisodeStateError,
    FeatureSpec,
    FrameError,
    Schema,
    SchemaError,
    StoreCorruptError,
    StoreLockedError,
    TrajectoryStore,
)


def test_round_trip_keeps_frames_and_metadata(data_store_path):
    store = TrajectoryStore.open(data_store_path)
    assert (store.num_episodes, store.num_frames) == (4, 24)
    assert store.fps == 10 and store.robot_type == "test"
    assert store.schema == data_schema()
    np.testing.assert_array_equal(store.episode_ends(), [5, 14, 17, 24])
    meta = store.episode_meta(1)
    assert (meta.index, meta.length, meta.start, meta.instruction) == (1, 9, 5, "task 1")
    assert (meta.success, meta.env_id, meta.seed, meta.extra) == (False, "env", 1, {"note": 1})
    episode = store.read_episode(1)
    np.testing.assert_array_equal(episode["observation.state"][:, 0], np.arange(5, 14))
    np.testing.assert_array_equal(episode["action"][:, 0], np.arange(9))
    assert episode["observation.images.front"].shape == (9, 16, 16, 3)
    assert episode["observation.images.front"][0, 0, 0, 0] == 5
    assert list(store.read_episode(-1, keys=["action"])) == ["action"]
    with pytest.raises(IndexError, match="4 committed"):
        store.read_episode(4)


def _bad_frames():
    good = data_frame(0, 0)
    wrong_shape = dict(good, **{"observation.state": np.zeros(4, np.float32)})
    wrong_dtype = dict(
        good, **{"observation.images.front": good["observation.images.front"].astype(np.float32)}
    )
    nan = dict(good, action=np.array([np.nan, 0.0], np.float32))
    missing = {k: v for k, v in good.items() if k != "action"}
    unknown = dict(good, **{"observation.velocity": np.zeros(3)})
    return [
        (wrong_shape, "observation.state", "shape"),
        (wrong_dtype, "observation.images.front", "dtype"),
        (nan, "action", "NaN"),
        (missing, "action", "missing"),
        (unknown, "observation.velocity", "unknown"),
    ]


@pytest.mark.parametrize("frame, feature, problem", _bad_frames())
def test_bad_frame_names_feature_and_index_and_writes_nothing(data_store_path, frame, feature, problem):
    with TrajectoryStore.open(data_store_path, mode="a") as store, store.writer() as writer:
        writer.start_episode("x")
        writer.add_frame(data_frame(24, 0))
        writer.add_frame(data_frame(25, 1))
        with pytest.raises(FrameError, match=problem) as info:
            writer.add_frame(frame)
        assert info.value.feature == feature and info.value.frame_index == 2
        assert "frame 2" in str(info.value) and feature in str(info.value)
        assert writer.frames_in_episode == 2  # the bad frame was not taken
        writer.add_frame(data_frame(26, 2))
        assert writer.commit_episode(True) == 4
    store = TrajectoryStore.open(data_store_path)
    np.testing.assert_array_equal(store.read_episode(4)["observation.state"][:, 0], [24, 25, 26])


def test_discarded_episode_leaves_no_trace(data_store_path):
    with TrajectoryStore.open(data_store_path, mode="a") as store:
        with store.writer(flush_frames=2) as writer:
            writer.start_episode("discard me")
            for i in range(5):  # flushed past the committed end twice
                writer.add_frame(data_frame(100 + i, i))
            writer.discard_episode()
            writer.start_episode("keep me")
            writer.add_frame(data_frame(24, 0))
            writer.commit_episode(False)
        with store.writer() as writer:  # an episode left open is discarded on exit
            writer.start_episode("left open")
            writer.add_frame(data_frame(999, 0))
    store = TrajectoryStore.open(data_store_path)
    assert store.num_frames == 25 and store.array("data/action").shape[0] == 25
    assert [m.instruction for m in store.episodes_meta()][-1] == "keep me"
    assert store.read_episode(4)["observation.state"][0, 0] == 24


def test_writer_calls_out_of_order_raise():
    schema = data_schema()
    with pytest.raises(SchemaError):
        Schema({"observation.images.front": FeatureSpec("float32", (16, 16, 3), "image")})
    with pytest.raises(SchemaError):
        Schema({"front_camera": FeatureSpec("uint8", (16, 16, 3), "image")})
    with pytest.raises(SchemaError):
        FeatureSpec("float32", (3,), "state", ("a", "b"))
    assert Schema.from_json(schema.to_json()) == schema


def test_episode_state_errors(tmp_path):
    with TrajectoryStore.create(tmp_path / "s", data_schema(), 10, "t") as store, store.writer() as writer:
        with pytest.raises(EpisodeStateError):
            writer.add_frame(data_frame(0, 0))
        writer.start_episode("a")
        with pytest.raises(EpisodeStateError):
            writer.start_episode("b")
        with pytest.raises(EpisodeStateError, match="no frames"):
            writer.commit_episode(True)
        writer.discard_episode()
        with pytest.raises(ValueError, match="JSON"):
            writer.start_episode("c", bad=object())
    reader = TrajectoryStore.open(tmp_path / "s")
    with pytest.raises(Exception, match="append"):
        reader.writer()


def test_second_writer_is_refused_and_dead_writer_lock_recovers(data_store_path):
    store = TrajectoryStore.open(data_store_path, mode="a")
    with pytest.raises(StoreLockedError, match="another writer"):
        TrajectoryStore.open(data_store_path, mode="a")
    store.close()
    # A process that holds the lock and is killed: its lock dies with it.
    with store_held_elsewhere(data_store_path) as pid, pytest.raises(StoreLockedError, match=f"pid {pid}"):
        TrajectoryStore.open(data_store_path, mode="a")
    with TrajectoryStore.open(data_store_path, mode="a") as again:
        write_data_episodes(again, [2])
    assert TrajectoryStore.open(data_store_path).num_episodes == 5


def test_reader_sees_only_committed_episodes(data_store_path):
    reader = TrajectoryStore.open(data_store_path)
    with TrajectoryStore.open(data_store_path, mode="a") as store, store.writer(flush_frames=2) as writer:
        writer.start_episode("in progress")
        for i in range(6):
            writer.add_frame(data_frame(24 + i, i))
        fresh = TrajectoryStore.open(data_store_path)
        assert fresh.num_episodes == 4 and fresh.num_frames == 24
        assert store.array("data/action").shape[0] > 24  # rows exist past the commit point
        writer.commit_episode(True)
    assert reader.num_episodes == 4  # a snapshot until refreshed
    reader.refresh()
    assert reader.num_episodes == 5
    np.testing.assert_array_equal(reader.read_episode(4)["action"][:, 0], np.arange(6))


def test_open_refuses_non_stores(tmp_path):
    with pytest.raises(StoreCorruptError):
        TrajectoryStore.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreCorruptError):
        TrajectoryStore.open(tmp_path / "empty")
    with pytest.raises(FileExistsError):
        TrajectoryStore.create(tmp_path, data_schema(), 10, "t")


def test_stats_match_numpy_and_persist(data_store_path):
    with TrajectoryStore.open(data_store_path, mode="a") as store:
        assert store.stats is None and not store.stats_are_current()
        stats = store.compute_stats(write=True)
    store = TrajectoryStore.open(data_store_path)
    assert store.stats_are_current()
    state = np.concatenate([store.read_episode(i)["observation.state"] for i in range(4)])
    images = np.concatenate([store.read_episode(i)["observation.images.front"] for i in range(4)])
    saved = store.stats
    for values in (stats, saved):
        np.testing.assert_allclose(values["observation.state"]["mean"], state.mean(0), rtol=1e-5)
        np.testing.assert_allclose(values["observation.state"]["std"], state.std(0), rtol=1e-5)
        np.testing.assert_allclose(
            values["observation.state"]["q99"], np.quantile(state, 0.99, axis=0), rtol=1e-5
        )
        np.testing.assert_array_equal(values["observation.state"]["max"], state.max(0))
        pixels = images.reshape(-1, 3).astype(np.float64)
        np.testing.assert_allclose(values["observation.images.front"]["mean"], pixels.mean(0), rtol=1e-5)
        np.testing.assert_allclose(values["observation.images.front"]["std"], pixels.std(0), rtol=1e-4)
        np.testing.assert_array_equal(values["observation.images.front"]["min"], pixels.min(0))
        assert set(values["action"]) == {"mean", "std", "min", "max", "q01", "q99"}
    with TrajectoryStore.open(data_store_path, mode="a") as store:
        write_data_episodes(store, [3])
        assert not store.stats_are_current()
    with pytest.raises(Exception, match="append"):
        TrajectoryStore.open(data_store_path).compute_stats(write=True)
