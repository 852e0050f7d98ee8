"""Shared pytest fixtures. Each part keeps its fixtures in its own marked section."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# vla.data fixtures (owner: trajectory store). Small stores: 16x16 images, frames tagged so tests
# can check exactly which frame came back (state[0] = global frame index, action[0] = frame).
# ---------------------------------------------------------------------------------------------
import contextlib

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


@contextlib.contextmanager
def store_held_elsewhere(path, create: bool = False):
    """Another process holding the writer lock of the store at ``path`` (creating it there first if
    ``create``) until the block ends, when it is killed; yields its pid."""
    import os
    import subprocess
    import sys

    opening = (
        f"TrajectoryStore.create({str(path)!r}, data_schema(), fps=10, robot_type='test')"
        if create
        else f"TrajectoryStore.open({str(path)!r}, mode='a')"
    )
    code = (
        f"import sys, time; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from conftest import data_schema\nfrom vla.data import TrajectoryStore\n"
        f"held = {opening}\nprint('held', flush=True)\ntime.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=30)


# ------------------------------------------------------------------- end of vla.data fixtures


# ---------------------------------------------------------------------------------------------
# vla.deploy fixtures (owner: deployment). A real `vla serve` process on a tiny untrained
# checkpoint: one camera (front, 16x16), state 4, action 3, chunks of 4 actions.
# ---------------------------------------------------------------------------------------------
UNTRAINED_SMALL = [
    "policy.model.n_layer=1",
    "policy.model.n_embd=32",
    "policy.model.n_head=2",
    "policy.model.horizon=4",
]


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory):
    """The tiny untrained checkpoint, written once per test session by the training code."""
    from vla.deploy.untrained import write_untrained_checkpoint

    root = tmp_path_factory.mktemp("untrained")
    return write_untrained_checkpoint(
        root / "ckpt", cameras=("front",), image_size=16, state_dim=4, action_dim=3, overrides=UNTRAINED_SMALL
    )


def untrained_observation() -> dict:
    """One observation that fits :func:`untrained_checkpoint`."""
    rng = np.random.default_rng(0)
    return {
        "observation.images.front": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=4).astype(np.float32),
        "instruction": "pick up the red cube",
    }


class ServeProcess:
    """``vla serve`` in a subprocess; its output lines are collected by a reader thread."""

    def __init__(self, checkpoint) -> None:
        import queue
        import subprocess
        import sys
        import threading

        command = [
            sys.executable,
            "-m",
            "vla.cli",
            "serve",
            f"checkpoint={checkpoint}",
            "port=0",
            "device=cpu",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float):
        """The first new output line matching ``pattern`` (a ``re.Match``); fails the test after ``timeout`` s."""
        import queue
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(
            f"no line matching {pattern!r} within {timeout} s; output:\n{''.join(self.seen)}"
        )

    def url(self, timeout: float = 60.0) -> str:
        """The server's ``ws://`` address, once it listens."""
        return self.wait_for(r"listening on (ws://\S+)", timeout).group(1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@contextlib.contextmanager
def serve_process(checkpoint):
    """A running ``vla serve checkpoint=<checkpoint> port=0`` (killed at the end of the block if still up)."""
    server = ServeProcess(checkpoint)
    try:
        yield server
    finally:
        server.close()


# ----------------------------------------------------------------- end of vla.deploy fixtures
