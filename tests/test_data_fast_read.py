"""The fast training read path: batched ``__getitems__``, direct chunk-file reads, their fallbacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import data_frame, data_schema, endless_writer_code
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from vla.data import FeatureSpec, Schema, StoreCorruptError, TrajectoryDataset, TrajectoryStore, WindowSpec
from vla.data import chunks as chunks_module
from vla.data.batch import WindowBatch, collate_windows
from vla.data.cache import StoreFrames
from vla.data.chunks import chunk_reader
from vla.data.rows import ZarrChunkReader

SPEC = WindowSpec(n_obs_steps=3, horizon=4)
IMAGES = ("observation.images.noise", "observation.images.front", "observation.images.black")


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_getitems_matches_single_samples_and_default_collate(data_store_path):
    for in_memory in (False, True):
        dataset = TrajectoryDataset(data_store_path, SPEC, in_memory=in_memory)
        indices = [5, 0, 13, -1, 7, 7, 23]
        batch = dataset.__getitems__(indices)
        assert isinstance(batch, WindowBatch) and len(batch) == len(indices)
        expected = default_collate([dataset[i] for i in indices])
        _assert_same(collate_windows(batch), expected)
        _assert_same(default_collate(batch), expected)  # any list-of-samples collate still works
        assert batch[1]["episode_index"] == 0 and isinstance(batch[1]["frame_index"], int)
        with pytest.raises(IndexError, match="sample 24"):
            dataset.__getitems__([0, 24])
    # A plain DataLoader (default collate) and a Subset take the batched path too.
    subset = torch.utils.data.Subset(dataset, [3, 4, 5])
    loaded = next(iter(DataLoader(subset, batch_size=3)))
    assert loaded["observation.state"][:, -1, 0].tolist() == [3, 4, 5]


def test_in_memory_subset_loads_only_the_frames_it_needs(data_store_path):
    dataset = TrajectoryDataset(data_store_path, SPEC, episodes=[0], in_memory=True)
    assert dataset.source._arrays["action"].shape[0] == 5  # episode 0 is frames 0..4 of 24
    assert dataset[4]["observation.state"][:, 0].tolist() == [2, 3, 4]


def _mixed_store(tmp_path, frames=2600):
    """Noisy (stored uncompressed), tagged (compressible) and all-black (all fill value) cameras."""
    features = {name: FeatureSpec("uint8", (16, 16, 3), "image") for name in IMAGES}
    features.update(data_schema().features)
    features.pop("observation.images.front")
    features["observation.images.front"] = FeatureSpec("uint8", (16, 16, 3), "image")
    path = tmp_path / "mixed.zarr"
    rng = np.random.default_rng(0)
    store = TrajectoryStore.create(path, Schema(features), fps=10, robot_type="test")
    with store, store.writer() as writer:
        for episode, start in enumerate(range(0, frames, 650)):
            writer.start_episode(f"task {episode}")
            for i in range(min(650, frames - start)):
                frame = data_frame(start + i, i)
                frame["observation.images.noise"] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                frame["observation.images.black"] = np.zeros((16, 16, 3), np.uint8)
                writer.add_frame(frame)
            writer.commit_episode(True)
    return path


def test_direct_reader_matches_zarr_for_every_chunk(tmp_path, monkeypatch):
    path = _mixed_store(tmp_path)
    store = TrajectoryStore.open(path)
    decoded = []
    real = chunks_module.blosc.decompress
    counting = lambda src, out: decoded.append(1) or real(src, out)  # noqa: E731
    for name in (*IMAGES, "observation.state", "action"):
        array = store.array(f"data/{name}")
        reader = chunk_reader(array, str(path), name)
        assert reader is not None
        decoded.clear()
        for index in range(-(-store.num_frames // reader.chunk_frames)):
            start = index * reader.chunk_frames
            expected = np.asarray(array[start : start + reader.chunk_frames])
            with monkeypatch.context() as patch:  # count Blosc decodes of our reader only
                patch.setattr(chunks_module.blosc, "decompress", counting)
                chunk = reader.read(index)
            np.testing.assert_array_equal(chunk[: len(expected)], expected, err_msg=name)
        if name == "observation.images.noise":
            # Raw noisy frames are read, not decoded; only the partly filled last chunk compresses.
            assert reader.chunks_per_file > 1 and len(decoded) == 1
        if name == "observation.images.front":
            assert len(decoded) == 11  # compressible: every chunk went through Blosc
    # Stored although all fill value: a missing chunk file is then always damage (never zeros).
    assert any((path / "data" / "observation.images.black" / "c").rglob("*"))


def test_zarr_fallback_and_direct_reads_agree(tmp_path, monkeypatch):
    path = _mixed_store(tmp_path, frames=900)
    direct = TrajectoryDataset(path, SPEC, cache_bytes=1)
    indices = list(range(0, len(direct), 7))
    fast = collate_windows(direct.__getitems__(indices))
    monkeypatch.setattr("vla.data.chunks.chunk_reader", lambda *args: None)  # as for remote stores
    slow = TrajectoryDataset(path, SPEC, cache_bytes=1)
    assert all(isinstance(reader, ZarrChunkReader) for reader in slow.source._readers.values())
    _assert_same(collate_windows(slow.__getitems__(indices)), fast)


@pytest.mark.parametrize("feature", ["observation.images.noise", "observation.images.front"])
def test_corrupt_chunk_raises_naming_feature_and_frames(tmp_path, feature):
    path = _mixed_store(tmp_path, frames=900)
    shard = path / "data" / feature / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[300] ^= 0xFF  # inside the first inner chunk (frames 0..255)
    shard.write_bytes(bytes(raw))
    dataset = TrajectoryDataset(path, SPEC)
    with pytest.raises(StoreCorruptError, match=rf"feature '{feature}': frames 0\.\.255 .*CRC32C"):
        dataset[10]
    assert dataset[600]["observation.state"][-1, 0] == 600  # other chunks still read


def test_truncated_shard_is_reported_not_crashed(tmp_path):
    path = _mixed_store(tmp_path, frames=900)
    shard = path / "data" / "observation.images.noise" / "c" / "0" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(StoreCorruptError, match="observation.images.noise"):
        TrajectoryDataset(path, SPEC)[0]


def test_batched_reads_stay_correct_while_a_writer_rewrites_the_shard(tmp_path):
    path = tmp_path / "store.zarr"
    TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test").close()
    code = endless_writer_code(path, flush_frames=16, episode_length=40, instruction="concurrent")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        for _ in range(10):
            dataset = TrajectoryDataset(path, SPEC, cache_bytes=1)  # every read goes to the file
            batch = collate_windows(dataset.__getitems__(list(range(len(dataset)))))
            last = batch["observation.state"][:, -1, 0]
            np.testing.assert_array_equal(last.numpy(), np.arange(len(dataset)))
            assert (batch["observation.images.front"][:, -1, 0, 0, 0] == last.long() % 251).all()
            assert dataset.source._readers["observation.images.front"] is not None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def test_store_frames_honours_the_committed_end(data_store_path):
    store = TrajectoryStore.open(data_store_path)
    frames = StoreFrames(store, ["observation.state"], end=10)
    out = np.empty((3, 3), np.float32)
    frames.gather("observation.state", np.array([9, 0, 5]), out)
    assert out[:, 0].tolist() == [9, 0, 5]


def test_chunk_cache_grows_only_on_misses_a_larger_cache_would_have_hit():
    from vla.data.cache import ChunkCache

    chunk = 1000
    released = []
    cache = ChunkCache(
        max_bytes=10 * chunk, initial_bytes=3 * chunk, release=lambda k, a: released.append(k[1])
    )

    def load(key):
        return lambda: np.full(chunk, key % 251, np.uint8)

    for key in range(8):  # never-seen chunks: the cache stays at its start size, evicting the oldest
        assert cache.get(("k", key), load(key))[0] == key % 251
    assert cache.limit == 3 * chunk and cache.nbytes == 3 * chunk and cache.ghost_hits == 0
    assert released == [0, 1, 2, 3, 4]  # every evicted array handed back (for its memory's reuse)
    assert cache.get(("k", 7), load(7))[0] == 7 and cache.hits == 1
    cache.get(("k", 2), load(2))  # evicted recently: a larger cache would have hit it
    assert cache.ghost_hits == 1 and cache.limit == 4 * chunk and cache.nbytes == 4 * chunk
    for key in range(100, 200):  # growth stops at max_bytes, however many ghosts come back
        cache.get(("k", key), load(key))
    for key in range(100, 200):
        cache.get(("k", key), load(key))
    assert cache.limit <= cache.max_bytes and cache.nbytes <= cache.max_bytes
    tiny = ChunkCache(max_bytes=1)  # one chunk always fits (no release: evicted arrays are dropped)
    assert tiny.get(("k", 0), load(0)).nbytes == chunk and tiny.nbytes == chunk


@pytest.mark.parametrize("cache_bytes", [1, 2 * 256 * 16 * 16 * 3, 1 << 30])
def test_gather_is_exact_whatever_the_cache_holds(tmp_path, cache_bytes):
    """One take from the chunk arena, or chunk by chunk when a batch's chunks do not all fit."""
    path = _mixed_store(tmp_path)
    store = TrajectoryStore.open(path)
    frames = StoreFrames(store, [*IMAGES, "observation.state"], cache_bytes=cache_bytes)
    rng = np.random.default_rng(0)
    for name in (*IMAGES, "observation.state"):
        everything = np.asarray(store.array(f"data/{name}")[:])
        for _ in range(5):
            rows = rng.integers(0, store.num_frames, size=(16, 3))
            out = np.empty((16, 3, *everything.shape[1:]), everything.dtype)
            frames.gather(name, rows, out)
            np.testing.assert_array_equal(out, everything[rows], err_msg=name)
    largest = max(int(np.prod(store.array(f"data/{n}").chunks)) * 4 for n in ("observation.state",))
    assert frames.cache.nbytes <= max(cache_bytes, largest)  # one chunk always fits


def _append_noise_episode(path, frames=300, seed=1):
    rng = np.random.default_rng(seed)
    store = TrajectoryStore.open(path, mode="a")
    start = store.num_frames
    with store, store.writer() as writer:
        writer.start_episode("appended")
        for i in range(frames):
            frame = data_frame(start + i, i)
            frame["observation.images.noise"] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            frame["observation.images.black"] = np.zeros((16, 16, 3), np.uint8)
            writer.add_frame(frame)
        writer.commit_episode(True)


def test_open_shards_keep_serving_committed_frames_after_a_rewrite(tmp_path):
    """Readers keep shard files open: a rewrite by a later writer (by rename) must not change them."""
    path = _mixed_store(tmp_path, frames=900)
    dataset = TrajectoryDataset(path, SPEC, cache_bytes=1)  # every gather reads the files
    indices = list(range(0, len(dataset), 3))
    before = collate_windows(dataset.__getitems__(indices))
    reader = dataset.source._readers["observation.images.noise"]
    assert 0 < len(reader._open) <= chunks_module.OPEN_FILES
    _append_noise_episode(path)  # rewrites the last, partly filled shard of every feature
    _assert_same(collate_windows(dataset.__getitems__(indices)), before)
    fresh = TrajectoryDataset(path, SPEC, cache_bytes=1)
    assert len(fresh) == len(dataset) + 300
    _assert_same(collate_windows(fresh.__getitems__(indices)), before)
    reader.close()
    assert not reader._open


def test_corruption_of_an_open_shard_is_still_reported(tmp_path):
    path = _mixed_store(tmp_path, frames=900)
    dataset = TrajectoryDataset(path, SPEC, cache_bytes=1)
    dataset[10]  # the shard is now open, its index read
    shard = path / "data" / "observation.images.noise" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[300] ^= 0xFF
    with open(shard, "r+b") as f:  # in place: the open descriptor sees the damage
        f.write(raw)
    with pytest.raises(StoreCorruptError, match=r"observation.images.noise.*frames 0\.\.255"):
        dataset[10]


def test_open_readers_close_quietly_at_interpreter_exit(data_store_path):
    """A store still open when the interpreter exits closes its shard files without an error message
    (module globals such as ``os`` may already be gone when the readers are collected)."""
    import subprocess
    import sys

    code = (
        "import torch  # a large interpreter: module teardown order is what exposed the bug\n"
        "from vla.data import TrajectoryStore\n"
        f"store = TrajectoryStore.open({str(data_store_path)!r})\n"
        "print(store.read_rows('observation.images.front', 0, 10).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "(10, 16, 16, 3)" in result.stdout, result.stderr
    assert "Exception ignored" not in result.stderr and "Error" not in result.stderr, result.stderr
