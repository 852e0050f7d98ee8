"""Environments in worker processes, one process per env slot, stepped in lockstep.

Why our own workers rather than ``gymnasium.vector.AsyncVectorEnv``: every episode of an evaluation
has its own (task, seed, phrasing), and a slot moves on to its next episode as soon as its current one
ends. Each worker therefore keeps one environment per (task, phrasing) it has been asked for, built
with :func:`vla.envs.registry.make_env` inside the worker (never before: forking after a GL context
exists hangs under EGL). Workers come from a ``forkserver``: a clean process, started once, that has
imported this module but never touched GL or CUDA, and forks each worker cheaply; ``spawn`` works too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

# The key under which a worker attaches the scripted expert's action to an observation when asked.
EXPERT_ACTION_KEY = "expert.action"


@dataclass
class StepResult:
    """What a worker sends back after ``reset`` (reward 0, not done) or ``step``."""

    observation: dict[str, Any]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    error: str | None = None  # the env raised: its traceback; the episode cannot go on
    # After reset only: the env's action shape and its own step limit (None when it declares none).
    action_shape: tuple[int, ...] | None = None
    max_episode_steps: int | None = None
    render_fps: float | None = None


def _plain_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The picklable scalars of an env's info dict (what the harness reads: success, reasons)."""
    plain: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, bool | int | float | str | np.bool_ | np.integer | np.floating):
            plain[str(key)] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, np.ndarray) and value.size == 1:
            plain[str(key)] = value.item()
    return plain


class _Worker:
    """The env side of one slot; lives in the worker process."""

    def __init__(self, suites: Mapping[str, str], env_cfg: Mapping[str, Any]) -> None:
        from vla.envs import registry

        registry.SUITES.clear()
        registry.SUITES.update(suites)  # suites registered in the parent (tests, plugins) exist here too
        self.registry = registry
        self.env_cfg = dict(env_cfg)
        self.envs: dict[tuple[str, str], Any] = {}
        self.env: Any = None
        self.expert: Any = None

    def reset(self, task: str, seed: int, phrasing: str, with_expert: bool) -> StepResult:
        key = (task, phrasing)
        if key not in self.envs:
            self.envs[key] = self.registry.make_env(self.env_cfg, task, phrasing=phrasing)
        self.env = self.envs[key]
        observation, info = self.env.reset(seed=seed)
        self.expert = self.registry.make_expert(self.env_cfg, self.env, seed=seed) if with_expert else None
        result = self._result(observation, 0.0, False, False, info)
        result.action_shape = tuple(self.env.action_space.shape)
        # A gymnasium TimeLimit records it in env.spec; suites built without gym.make on the env itself.
        spec = getattr(self.env, "spec", None)
        base = self.env.unwrapped
        limit = (
            getattr(spec, "max_episode_steps", None)
            or getattr(base, "max_episode_steps", None)
            or getattr(base, "max_steps", None)
        )
        result.max_episode_steps = int(limit) if limit else None
        result.render_fps = (getattr(self.env, "metadata", None) or {}).get("render_fps")
        return result

    def step(self, action: np.ndarray) -> StepResult:
        if self.env is None:
            raise RuntimeError("step before reset")
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._result(observation, float(reward), bool(terminated), bool(truncated), info)

    def _result(
        self, observation: dict, reward: float, terminated: bool, truncated: bool, info: Mapping
    ) -> StepResult:
        observation = dict(observation)
        if self.expert is not None:
            observation[EXPERT_ACTION_KEY] = np.asarray(self.expert(observation), dtype=np.float32)
        return StepResult(observation, reward, terminated, truncated, _plain_info(info))

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


def _worker_main(conn: Connection, suites: dict[str, str], env_cfg: dict[str, Any]) -> None:
    """Serve ``(command, args)`` messages until ``close``; env errors are returned, never fatal."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    worker: _Worker | None = None
    try:
        worker = _Worker(suites, env_cfg)
        conn.send(("ready", None))
    except Exception:  # report the import/config problem to the parent instead of dying silently
        conn.send(("fatal", traceback.format_exc()))
        return
    while True:
        try:
            command, args = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if command == "close":
            worker.close()
            conn.send(("closed", None))
            break
        try:
            result = worker.reset(*args) if command == "reset" else worker.step(*args)
        except Exception:
            result = StepResult({}, 0.0, True, False, {}, error=traceback.format_exc(limit=8))
        conn.send(("result", result))


class EnvPool:
    """``num_envs`` worker processes; send to several slots, then collect, so workers run in parallel."""

    def __init__(self, env_cfg: Mapping[str, Any], num_envs: int, start_method: str = "forkserver") -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        from vla.envs import registry

        context = mp.get_context(start_method)
        if start_method == "forkserver":
            # Only read when the forkserver first starts; later pools reuse it.
            context.set_forkserver_preload(["vla.evaluation.vector", "vla.envs.registry"])
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for slot in range(num_envs):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main,
                args=(child, dict(registry.SUITES), dict(env_cfg)),
                daemon=True,
                name=f"vla-eval-env-{slot}",
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for slot in range(num_envs):
            kind, payload = self._receive(slot)
            if kind != "ready":
                self.close()
                raise RuntimeError(f"env worker {slot} failed to start:\n{payload}")

    @property
    def num_envs(self) -> int:
        return len(self._conns)

    def send_reset(self, slot: int, task: str, seed: int, phrasing: str, with_expert: bool) -> None:
        self._conns[slot].send(("reset", (task, seed, phrasing, with_expert)))

    def send_step(self, slot: int, action: np.ndarray) -> None:
        self._conns[slot].send(("step", (action,)))

    def collect(self, slots: Sequence[int]) -> dict[int, StepResult]:
        """The answers of ``slots`` to the commands just sent to them."""
        results = {}
        for slot in slots:
            kind, payload = self._receive(slot)
            if kind != "result":
                raise RuntimeError(f"env worker {slot} answered {kind!r}: {payload}")
            results[slot] = payload
        return results

    def _receive(self, slot: int) -> tuple[str, Any]:
        try:
            return self._conns[slot].recv()
        except EOFError as exc:
            code = self._procs[slot].exitcode
            raise RuntimeError(f"env worker {slot} died (exit code {code})") from exc

    def close(self) -> None:
        """Close every env and stop every worker (safe to call twice)."""
        for conn, proc in zip(self._conns, self._procs, strict=True):
            try:
                if proc.is_alive():
                    conn.send(("close", None))
                    if conn.poll(10):
                        conn.recv()
            except (OSError, EOFError, BrokenPipeError):
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
