"""Recording one scripted-expert episode, in a worker process or in the writer's own process.

:func:`record_episode` rolls out a suite's expert from ``reset(seed=...)`` and returns the whole
episode as stacked arrays (what ``vla record``'s writer commits in one go). Worker processes start
with the ``spawn`` method and build their environments themselves: a GL context does not survive
``fork()`` (a child rendering with an inherited one hangs).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.envs import registry
from vla.features import ACTION_KEY, INSTRUCTION_KEY


@dataclass
class EpisodeRecording:
    """One finished episode, as a worker sends it back."""

    task: str
    seed: int
    instruction: str
    phrasing: str
    frames: dict[str, np.ndarray]  # feature -> (T, ...) array; observations before each action
    success: bool
    clipped_steps: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.frames[ACTION_KEY])


def record_episode(env: Any, expert: Callable[[dict], np.ndarray], task: str, seed: int) -> EpisodeRecording:
    """Roll out ``expert`` in ``env`` from ``reset(seed=seed)`` until the episode ends."""
    observation, info = env.reset(seed=seed)
    instruction = str(observation[INSTRUCTION_KEY])
    columns: dict[str, list[np.ndarray]] = {}
    success, clipped = False, 0
    while True:
        action = np.asarray(expert(observation), dtype=np.float32)
        for key, value in observation.items():
            if key != INSTRUCTION_KEY:
                columns.setdefault(key, []).append(np.asarray(value))
        columns.setdefault(ACTION_KEY, []).append(action)
        observation, _, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("success", False))
        clipped += bool(info.get("action_clipped", False))
        if terminated or truncated:
            break
    frames = {key: np.stack(values) for key, values in columns.items()}
    phrasing = str(info.get("phrasing", getattr(env.unwrapped, "phrasing", "train")))
    return EpisodeRecording(task, int(seed), instruction, phrasing, frames, success, clipped)


class _EpisodeRunner:
    """Keeps one env per task (built on first use) and records episodes with the suite's expert."""

    def __init__(self, env_cfg: Mapping[str, Any], noise: float) -> None:
        self.env_cfg, self.noise = dict(env_cfg), float(noise)
        self.envs: dict[str, Any] = {}

    def __call__(self, task: str, seed: int) -> EpisodeRecording:
        if task not in self.envs:
            self.envs[task] = registry.make_env(self.env_cfg, task)
        env = self.envs[task]
        expert = registry.make_expert(self.env_cfg, env, noise_std=self.noise, seed=seed)
        return record_episode(env, expert, task, seed)

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


_WORKER_RUNNER: _EpisodeRunner | None = None


def init_worker(
    suites: dict[str, str], env_cfg: dict[str, Any], noise: float, parent_pid: int | None = None
) -> None:
    """Set up a worker process: its suites, its episode runner, and its tie to the writer."""
    global _WORKER_RUNNER
    # Ctrl-C is the writer's business: it stops dispatching and keeps what is committed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    registry.SUITES.clear()
    registry.SUITES.update(suites)  # suites registered in the parent (tests, plugins) exist here too
    _WORKER_RUNNER = _EpisodeRunner(env_cfg, noise)


def _exit_with_parent(parent_pid: int, every_s: float = 0.5) -> None:
    """Exit this worker once ``parent_pid`` (the writer) is gone, however it died (SIGKILL included).

    A worker waiting for work blocks on a pipe that a dead writer never writes to again, and a
    recording one would finish episodes nobody commits; the kernel reparents it, which is seen here.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os._exit(1)  # no clean-up owed: the writer that would commit anything is gone

    threading.Thread(target=watch, name="vla-record-parent-watch", daemon=True).start()


def worker_episode(task: str, seed: int) -> EpisodeRecording:
    assert _WORKER_RUNNER is not None, "worker not initialised"
    return _WORKER_RUNNER(task, seed)


class InlineExecutor:
    """The executor interface, running each job at submit time in this process (``workers=0``)."""

    def __init__(self, env_cfg: Mapping[str, Any], noise: float) -> None:
        self.runner = _EpisodeRunner(env_cfg, noise)

    def submit(self, _fn: Callable, task: str, seed: int) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.runner(task, seed))
        except Exception as exc:  # surfaced by future.result(), as from a process pool
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.runner.close()
