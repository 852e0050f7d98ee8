"""``vla record`` on a batched backend: the scripted experts of many worlds, one simulator, one process.

:class:`BatchedRecorder` has the interface ``record()`` hands jobs to (``submit(fn, task, seed) ->
Future``, ``shutdown``), so hand-out order, in-order commits, the single writer, resume and
crash-safety are those of :mod:`vla.envs.record` unchanged. Jobs start in the order submitted, each in
the next free world; a simulation thread steps all worlds, runs every world's expert (the classic
expert logic on host copies of its state) and resolves a job's future with its
:class:`~vla.envs.record_rollout.EpisodeRecording` when the episode ends, exactly as
:func:`~vla.envs.record_rollout.record_episode` records one: the observation before each action,
the action, success if any step succeeded. Images are copied off the device for the store, once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from vla.envs import registry
from vla.envs.record_rollout import EpisodeRecording
from vla.features import ACTION_KEY


class BatchedRecorder:
    """Record expert episodes of ``env_cfg`` in ``num_worlds`` worlds at once (noise as ``vla record``'s)."""

    def __init__(self, env_cfg: Mapping[str, Any], noise: float, num_worlds: int) -> None:
        self.env = registry.make_batched_env(env_cfg, max(1, num_worlds))
        self.noise = float(noise)
        self.phrasing = str(env_cfg.get("phrasing", "train"))  # what make_env's envs would use
        self._jobs: deque[tuple[str, int, Future]] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="vla-record-batched", daemon=True)
        self._thread.start()

    def submit(self, _fn: Callable[..., Any], task: str, seed: int) -> Future:
        """Queue the episode ``(task, seed)``; its future resolves when it has been recorded."""
        future: Future = Future()
        with self._wake:
            if self._stop:
                raise RuntimeError("the batched recorder is shut down")
            self._jobs.append((task, int(seed), future))
            self._wake.notify()
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop the simulation thread (episodes in flight are lost, as with worker processes)."""
        with self._wake:
            self._stop = True
            if cancel_futures:
                for _, _, future in self._jobs:
                    future.cancel()
                self._jobs.clear()
            self._wake.notify()
        if wait:
            self._thread.join()

    # ----------------------------------------------------------------- the simulation thread
    def _serve(self) -> None:
        running: dict[int, _Episode] = {}
        try:
            while True:
                with self._wake:
                    while not self._stop and not self._jobs and not running:
                        self._wake.wait()
                    if self._stop:
                        return
                    free = [w for w in range(self.env.num_worlds) if w not in running]
                    starting = [(w, *self._jobs.popleft()) for w in free[: len(self._jobs)]]
                self._start(starting, running)
                self._step(running)
        except BaseException as exc:  # the writer sees it from future.result()
            for episode in running.values():
                episode.future.set_exception(exc)
            with self._wake:
                self._stop = True
                for _, _, future in self._jobs:
                    future.set_exception(exc)
                self._jobs.clear()

    def _start(self, starting: list[tuple[int, str, int, Future]], running: dict[int, _Episode]) -> None:
        if not starting:
            return
        from vla.envs.tabletop.batched import WorldEpisode

        worlds = [world for world, *_ in starting]
        self.env.reset_worlds(
            worlds, [WorldEpisode(task, seed, self.phrasing) for _, task, seed, _ in starting]
        )
        for world, task, seed, future in starting:
            running[world] = _Episode(task, seed, self.env.instructions[world], future)
            self.env.experts.begin(world, self.noise, seed)

    def _step(self, running: dict[int, _Episode]) -> None:
        """One control step of every world; record the running ones, hand back the finished ones."""
        worlds = sorted(running)
        observation = {key: value[worlds].cpu().numpy() for key, value in self.env.observation().items()}
        actions = self.env.expert_actions()
        for row, world in enumerate(worlds):
            running[world].add({key: value[row] for key, value in observation.items()}, actions[world])
        flags = self.env.step(actions)
        self.env.sim.check_overflow()
        success, ended = flags.success.cpu().numpy(), (flags.terminated | flags.truncated).cpu().numpy()
        clipped = self.env.clipped.cpu().numpy()
        for world in worlds:
            episode = running[world]
            episode.success = episode.success or bool(success[world])
            if ended[world]:
                self.env.experts.end(world)
                del running[world]
                episode.future.set_result(episode.recording(self.phrasing, int(clipped[world])))


class _Episode:
    """One episode being recorded: its frames so far and whether it has succeeded."""

    def __init__(self, task: str, seed: int, instruction: str, future: Future) -> None:
        self.task, self.seed, self.instruction, self.future = task, seed, instruction, future
        self.columns: dict[str, list[np.ndarray]] = {}
        self.success = False

    def add(self, observation: Mapping[str, np.ndarray], action: np.ndarray) -> None:
        for key, value in observation.items():
            self.columns.setdefault(key, []).append(value)
        self.columns.setdefault(ACTION_KEY, []).append(np.asarray(action, dtype=np.float32))

    def recording(self, phrasing: str, clipped_steps: int) -> EpisodeRecording:
        frames = {key: np.stack(values) for key, values in self.columns.items()}
        return EpisodeRecording(
            self.task, self.seed, self.instruction, phrasing, frames, self.success, clipped_steps
        )
