"""Store guarantees: one writer from creation on, missing chunks never read as fill, damage shown cheaply."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_frame, data_schema, store_held_elsewhere, write_data_episodes

from vla.data import FeatureSpec, Schema, StoreCorruptError, StoreLockedError, TrajectoryStore
from vla.data.cli import main as data_main
from vla.data.rows import ZarrChunkReader

FRONT = "observation.images.front"


def _store(tmp_path, lengths=(100,) * 6):
    path = tmp_path / "s.zarr"
    with TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test") as store:
        write_data_episodes(store, list(lengths))
    return path


def _front_shards(path):
    return sorted(p for p in (path / "data" / FRONT / "c").rglob("*") if p.is_file())


# -- 1. the writer lock holds from creation on ----------------------------------------------------


def test_a_created_store_refuses_a_second_writer(tmp_path):
    path = tmp_path / "new.zarr"
    creator = TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test")
    with pytest.raises(StoreLockedError, match=rf"{path.name}.*another writer \(process pid"):
        TrajectoryStore.open(path, mode="a")
    with pytest.raises(StoreLockedError, match="another writer"):
        TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test", overwrite=True)
    write_data_episodes(creator, [3])  # the creator's store is untouched by the refused writers
    creator.close()
    with TrajectoryStore.open(path, mode="a") as again:  # released: the next writer gets it
        write_data_episodes(again, [2])
    assert TrajectoryStore.open(path).num_episodes == 2


def test_creating_over_a_store_held_by_another_process_is_refused(tmp_path):
    path = tmp_path / "held.zarr"
    with store_held_elsewhere(path, create=True) as pid:
        with pytest.raises(StoreLockedError, match=f"{path.name} is open for writing.*pid {pid}"):
            TrajectoryStore.open(path, mode="a")
        with pytest.raises(StoreLockedError, match=f"pid {pid}"):
            TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test", overwrite=True)
    assert TrajectoryStore.open(path).num_episodes == 0  # untouched by the refused writers


# -- 2. a missing or unreadable chunk is an error on every read path -------------------------------


def test_missing_shard_is_an_error_for_training_reads(tmp_path):
    from vla.data import TrajectoryDataset, WindowSpec

    path = _store(tmp_path)
    shards = _front_shards(path)
    assert shards
    shards[0].unlink()
    for in_memory in (False, True):
        with pytest.raises(StoreCorruptError, match=rf"feature '{FRONT}': frames 0\.\..*missing"):
            dataset = TrajectoryDataset(path, WindowSpec(n_obs_steps=2, horizon=4), in_memory=in_memory)
            dataset.__getitems__(list(range(0, len(dataset), 7)))


def test_missing_shard_is_an_error_through_the_zarr_path(tmp_path, monkeypatch):
    from vla.data import TrajectoryDataset, WindowSpec

    path = _store(tmp_path)
    _front_shards(path)[0].unlink()
    monkeypatch.setattr("vla.data.chunks.chunk_reader", lambda *args: None)  # as for remote stores
    dataset = TrajectoryDataset(path, WindowSpec(n_obs_steps=2, horizon=4), cache_bytes=1)
    assert all(isinstance(r, ZarrChunkReader) for r in dataset.source._readers.values())
    with pytest.raises(StoreCorruptError, match="missing"):
        dataset[0]
    with pytest.raises(StoreCorruptError, match="missing"):
        TrajectoryStore.open(path).read_episode(0)


def test_missing_chunk_fails_read_episode_and_stats(tmp_path):
    path = _store(tmp_path)
    (path / "data" / "action" / "c" / "0" / "0").unlink()
    store = TrajectoryStore.open(path)
    with pytest.raises(StoreCorruptError, match="feature 'action'.*missing"):
        store.read_episode(0)
    np.testing.assert_array_equal(store.read_episode(0, keys=[FRONT])[FRONT][:, 0, 0, 0], np.arange(100))
    with pytest.raises(StoreCorruptError, match="'action'"):
        store.compute_stats(write=False)


def test_missing_chunk_inside_a_shard_index_is_an_error(tmp_path):
    """A shard whose index says a committed chunk was never written (e.g. rewritten by other tools)."""
    path = _store(tmp_path)
    shard = _front_shards(path)[0]
    raw = bytearray(shard.read_bytes())
    import google_crc32c

    index_bytes = 16 * 16 + 4
    index = np.frombuffer(bytes(raw[-index_bytes:-4]), dtype="<u8").copy().reshape(-1, 2)
    index[0] = 2**64 - 1  # "never written"
    body = index.astype("<u8").tobytes()
    raw[-index_bytes:] = body + google_crc32c.value(body).to_bytes(4, "little")
    shard.write_bytes(bytes(raw))
    from vla.data import TrajectoryDataset, WindowSpec

    with pytest.raises(StoreCorruptError, match=rf"feature '{FRONT}': frames 0\.\..*missing"):
        TrajectoryDataset(path, WindowSpec())[0]


def test_all_zero_chunks_are_written_and_read_back(tmp_path):
    """Chunks equal to the fill value are stored too, so a missing file always means damage."""
    features = dict(data_schema().features)
    features["observation.images.black"] = FeatureSpec("uint8", (16, 16, 3), "image")
    path = tmp_path / "black.zarr"
    store = TrajectoryStore.create(path, Schema(features), fps=10, robot_type="t")
    with store, store.writer() as writer:
        writer.start_episode("dark")
        for i in range(20):
            black = np.zeros((16, 16, 3), np.uint8)
            writer.add_frame({**data_frame(i, i), "observation.images.black": black})
        writer.commit_episode(True)
    assert any((path / "data" / "observation.images.black" / "c").rglob("*"))
    episode = TrajectoryStore.open(path).read_episode(0)
    assert not episode["observation.images.black"].any()


def test_info_says_a_store_is_damaged_without_reading_it(tmp_path, capsys):
    path = _store(tmp_path)
    assert data_main(["info", str(path)]) == 0
    assert "DAMAGED" not in capsys.readouterr().out
    _front_shards(path)[0].unlink()
    assert data_main(["info", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and FRONT in out and "vla data validate" in out


def test_train_refuses_a_store_with_a_missing_shard(tmp_path):
    """What the careless user ran: `vla train` on a store one image shard short must fail, not train."""
    from vla.data import TrajectoryDataset, WindowSpec, make_dataloader

    path = _store(tmp_path)
    _front_shards(path)[0].unlink()
    loader = make_dataloader(TrajectoryDataset(path, WindowSpec()), batch_size=16, num_workers=0)
    with pytest.raises(StoreCorruptError, match=FRONT):
        for _ in loader:
            pass


# -- 9. absurd shapes get a clear error ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2**32, 2**32, 3), (2**31, 2**31, 3)])
def test_absurd_image_shape_is_refused_by_name(shape):
    with pytest.raises(ValueError, match=r"observation.images.front.*bytes per frame"):
        Schema({FRONT: FeatureSpec("uint8", shape, "image")})


def test_absurd_state_shape_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'observation.state'.*bytes per frame"):
        Schema({"observation.state": FeatureSpec("float32", (2**62, 2), "state")})


def test_a_store_being_created_is_reported_as_locked_not_corrupt(tmp_path):
    import zarr

    from vla.data.lock import WriterLock

    path = tmp_path / "creating.zarr"
    path.mkdir()
    lock = WriterLock(path)
    lock.acquire()  # a creator that has not written the commit record yet
    try:
        zarr.create_group(zarr.storage.LocalStore(path), zarr_format=3)
        with pytest.raises(
            StoreLockedError, match=rf"{path.name} is being created by another writer \(process pid"
        ):
            TrajectoryStore.open(path)
    finally:
        lock.release()
    with pytest.raises(StoreCorruptError, match="creation died"):
        TrajectoryStore.open(path)


def test_lerobot_export_of_a_damaged_store_fails_and_writes_no_dataset(tmp_path):
    pytest.importorskip("lerobot", reason="the LeRobot exporter needs the lerobot extra")
    from vla.interop.to_lerobot import convert_to_lerobot

    path = _store(tmp_path, lengths=(10, 10))
    (path / "data" / "action" / "c" / "0" / "0").unlink()
    out = tmp_path / "lerobot"
    with pytest.raises(StoreCorruptError, match="feature 'action'.*missing"):
        convert_to_lerobot(path, out, "test/damaged", progress=False)
    assert not out.exists()
