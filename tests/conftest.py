"""Shared pytest fixtures. Each part keeps its fixtures in its own marked section."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# vla.data fixtures (owner: trajectory store). Small stores: 16x16 images, frames tagged so tests
# can check exactly which frame came back (state[0] = global frame index, action[0] = frame).
# ---------------------------------------------------------------------------------------------
import numpy as np
import pytest


def data_schema():
    from vla.data import FeatureSpec, Schema

    return Schema(
        {
            "observation.images.front": FeatureSpec("uint8", (16, 16, 3), "image"),
            "observation.state": FeatureSpec("float32", (3,), "state", ("x", "y", "z")),
            "action": FeatureSpec("float32", (2,), "action", ("dx", "gripper")),
        }
    )


def data_frame(global_index: int, frame_index: int) -> dict[str, np.ndarray]:
    """A frame whose values identify it: state[0] = global frame, action[0] = frame in episode."""
    image = np.full((16, 16, 3), global_index % 251, dtype=np.uint8)
    state = np.array([global_index, frame_index, 0.5], dtype=np.float32)
    action = np.array([frame_index, -1.0], dtype=np.float32)
    return {"observation.images.front": image, "observation.state": state, "action": action}


def write_data_episodes(store, lengths, instruction_prefix="task"):
    """Write tagged episodes of the given lengths into an append-mode store."""
    total = store.num_frames
    with store.writer() as writer:
        for length in lengths:
            episode = store.num_episodes
            writer.start_episode(
                f"{instruction_prefix} {episode % 2}", env_id="env", seed=episode, note=episode
            )
            for i in range(length):
                writer.add_frame(data_frame(total + i, i))
            writer.commit_episode(success=episode % 2 == 0)
            total += length


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: extra threads only add synchronization
    (10x slower on a busy CPU). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_store_path(tmp_path):
    """A closed store of 4 tagged episodes (lengths 5, 9, 3, 7)."""
    from vla.data import TrajectoryStore

    path = tmp_path / "store.zarr"
    with TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test") as store:
        write_data_episodes(store, [5, 9, 3, 7])
    return path


def endless_writer_code(path, flush_frames: int, episode_length: int, instruction: str) -> str:
    """Python source for a subprocess that appends tagged episodes to ``path`` forever, flushing every
    ``flush_frames`` frames (so partial episodes reach the arrays) and printing each committed index."""
    import os

    return f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from conftest import data_frame
from vla.data import TrajectoryStore
store = TrajectoryStore.open({str(path)!r}, mode="a")
with store.writer(flush_frames={flush_frames}) as writer:
    while True:
        total = store.num_frames
        writer.start_episode({instruction!r}, seed=store.num_episodes)
        for i in range({episode_length}):
            writer.add_frame(data_frame(total + i, i))
        print(writer.commit_episode(True), flush=True)
"""


# ------------------------------------------------------------------- end of vla.data fixtures
