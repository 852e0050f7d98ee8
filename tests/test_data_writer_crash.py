"""A writer killed with SIGKILL mid-episode: the store reopens valid with every committed episode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import data_frame, data_schema, endless_writer_code, write_data_episodes

from vla.data import TrajectoryStore, validate_store
from vla.envs.record_workers import sigterm_exits


def _check_intact(path, at_least: int) -> int:
    store = TrajectoryStore.open(path)
    assert store.num_episodes >= at_least
    ends = store.episode_ends()
    assert ends[-1] == store.num_frames
    state = np.concatenate([store.read_episode(i)["observation.state"] for i in range(store.num_episodes)])
    np.testing.assert_array_equal(state[:, 0], np.arange(store.num_frames))  # every frame, in order
    assert validate_store(path) == []
    return store.num_episodes


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13])
def test_killed_writer_leaves_committed_episodes_intact(tmp_path, delay):
    path = tmp_path / "store.zarr"
    with TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test") as store:
        write_data_episodes(store, [3])
    code = endless_writer_code(path, flush_frames=4, episode_length=12, instruction="crash test")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):  # two committed episodes, then die somewhere in the next
            assert child.stdout.readline().strip().isdigit()
        time.sleep(delay)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    committed = _check_intact(path, at_least=3)
    # Reopening for append truncates what the dead writer left past the commit point.
    with TrajectoryStore.open(path, mode="a") as store:
        assert store.array("data/observation.state").shape[0] == store.num_frames
        assert not list(path.rglob("*.partial"))
        write_data_episodes(store, [4])
    assert _check_intact(path, at_least=committed + 1) == committed + 1


def test_reader_never_sees_a_partial_episode_while_writer_runs(tmp_path):
    path = tmp_path / "store.zarr"
    TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test").close()
    code = endless_writer_code(path, flush_frames=4, episode_length=12, instruction="crash test")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        for _ in range(15):
            store = TrajectoryStore.open(path)
            assert store.num_frames == 12 * store.num_episodes
            last = store.read_episode(store.num_episodes - 1)["action"][:, 0]
            np.testing.assert_array_equal(last, np.arange(12))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert data_frame(0, 0)["action"][0] == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_commit_waits_for_it(tmp_path, monkeypatch, signum):
    """Ctrl-C or SIGTERM arriving while the commit record is written: the episode is committed
    whole, the interrupt comes right after, and the writer's clean-up keeps every committed frame.
    (Unheld, the interrupt could land while zarr's IO thread still wrote the record, and the clean-up
    truncated the arrays under it: "10 frames stored, 20 committed".)"""
    from zarr.core.attributes import Attributes

    path = tmp_path / "store.zarr"
    with TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test") as store:
        write_data_episodes(store, [3])
    write_record = Attributes.__setitem__

    def interrupted_write(self, key, value):
        os.kill(os.getpid(), signum)  # arrives before the record is written
        write_record(self, key, value)

    # SIGTERM as `vla record` handles it: SystemExit(143) through the writer's clean-up.
    with sigterm_exits(), pytest.raises((KeyboardInterrupt, SystemExit)):
        with TrajectoryStore.open(path, mode="a") as store, store.writer() as writer:
            writer.start_episode("interrupted", env_id="env", seed=1)
            for i in range(4):
                writer.add_frame(data_frame(3 + i, i))
            monkeypatch.setattr(Attributes, "__setitem__", interrupted_write)
            writer.commit_episode(success=True)
        pytest.fail("the signal was not delivered after the commit")
    monkeypatch.undo()
    assert _check_intact(path, at_least=2) == 2  # the interrupted episode is in, all 7 frames
