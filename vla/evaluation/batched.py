"""Closed-loop rollouts on a batched simulator: each world is an episode slot, all on one device.

The same protocol as :func:`vla.evaluation.run.run_episodes` (one ChunkExecutor per slot, a slot
whose episode ends takes the next pending request, outcomes from :func:`~vla.evaluation.run.
episode_outcome`, chunks checked by :func:`~vla.evaluation.run.chunk_problem`), with the
environments replaced by one batched env (``vla.envs.tabletop.batched``): observations stay on the
device as (N, T, ...) history tensors, the policy gets the histories of the slots that need a chunk,
and only (N,) outcome flags come back to the host each step.

A policy that declares ``accepts_device_tensors = True`` receives torch tensors on the simulator's
device; any other (``vla.policies.Policy`` reads numpy) receives host copies, and the time those
copies take is reported (``policy_input_transfer_s``) next to the time the policy takes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vla.evaluation import results as R
from vla.evaluation.run import (
    DEFAULT_MAX_STEPS,
    VIDEO_CAMERA,
    EpisodeRequest,
    RolloutSettings,
    deliver_chunks,
    episode_outcome,
)
from vla.evaluation.vector import EXPERT_ACTION_KEY, StepResult
from vla.features import INSTRUCTION_KEY, is_image_key
from vla.policies.executor import ChunkExecutor

FILMED_WORLDS = 8  # at most this many episodes keep their frames at once (host memory stays bounded)


@dataclass
class _Slot:
    request: EpisodeRequest
    executor: ChunkExecutor
    max_steps: int
    instruction: str
    steps: int = 0
    frames: list[np.ndarray] | None = None  # None: not filmed


@dataclass
class BatchedTiming:
    """Where a batched rollout's time went (seconds)."""

    policy_s: float = 0.0
    policy_input_transfer_s: float = 0.0
    sim_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def run_batched_episodes(
    policy: Any,
    env: Any,
    requests: Sequence[EpisodeRequest],
    settings: RolloutSettings,
    timing: BatchedTiming | None = None,
) -> list[R.EpisodeResult]:
    """Roll out every request on the worlds of ``env`` (``settings.num_envs`` is its world count
    already); results come back in request order."""
    timing = timing if timing is not None else BatchedTiming()
    max_steps, keep_frames, on_episode = settings.max_steps, settings.keep_frames, settings.on_episode
    n_obs_steps = int(getattr(policy.spec, "n_obs_steps", 1) or 1)
    with_expert = bool(getattr(policy, "uses_expert", False))
    fps = (getattr(env, "metadata", None) or {}).get("render_fps")
    action_shape = tuple(env.action_space.shape)
    pending = deque(enumerate(requests))
    slots: dict[int, _Slot] = {}
    order: dict[int, int] = {}  # world -> index of its request
    finished: dict[int, R.EpisodeResult] = {}
    history: dict[str, torch.Tensor] = {}  # key -> (N, T, ...) on the device

    def finish(world: int, outcome: str, detail: str = "") -> None:
        slot = slots.pop(world)
        req = slot.request
        result = R.EpisodeResult(task=req.task, seed=req.seed, phrasing=req.phrasing,
                                 instruction=slot.instruction, success=outcome == R.SUCCESS,
                                 length=slot.steps, outcome=outcome, detail=detail)  # fmt: skip
        if with_expert:
            env.experts.end(world)
        if on_episode is not None:
            result.video = on_episode(result, slot.frames or [], fps)
        finished[order.pop(world)] = result

    def start(free: list[int]) -> list[int]:
        worlds = free[: len(pending)]
        if not worlds:
            return []
        taken = [pending.popleft() for _ in worlds]
        env.reset_worlds(worlds, [req for _, req in taken])  # (task, seed, phrasing), as the env reads them
        limits = env.max_steps[worlds].tolist()
        filmed = sum(s.frames is not None for s in slots.values())
        for world, (index, req), limit in zip(worlds, taken, limits, strict=True):
            order[world] = index
            film = keep_frames and filmed < FILMED_WORLDS
            filmed += film
            executor = ChunkExecutor(settings.replan_every, settings.temporal_ensemble)
            slots[world] = _Slot(req, executor, max_steps or limit or DEFAULT_MAX_STEPS,
                                 env.instructions[world], frames=[] if film else None)  # fmt: skip
            if with_expert:
                env.experts.begin(world, seed=req.seed)
        return worlds

    def observe(reset: list[int]) -> None:
        """Append the current observation to every history; reset worlds repeat their first frame."""
        observation = env.observation()
        index = torch.as_tensor(reset, dtype=torch.long)
        for key, value in observation.items():
            frame = value[:, None]
            if key not in history:
                history[key] = frame.repeat_interleave(n_obs_steps, 1)
                continue
            history[key] = torch.cat([history[key][:, 1:], frame], 1)
            if reset:
                history[key][index.to(value.device)] = frame[index.to(value.device)]
        if with_expert:
            history[EXPERT_ACTION_KEY] = torch.as_tensor(env.expert_actions())[:, None]
        _keep_frames(slots, observation)

    started = time.perf_counter()
    observe(start(list(range(env.num_worlds))))
    while slots:
        needing = [w for w, s in slots.items() if s.executor.needs_chunk()]
        if needing:
            _push_chunks(policy, history, needing, slots, action_shape, finish, timing)
        actions = np.zeros((env.num_worlds, *action_shape), dtype=np.float32)
        for world, slot in slots.items():
            actions[world] = slot.executor.next_action()
        flags = env.step(actions)
        success, terminated, truncated = (
            f.cpu().numpy() for f in (flags.success, flags.terminated, flags.truncated)
        )
        for world in list(slots):
            slot = slots[world]
            slot.steps += 1
            step = StepResult(
                {}, 0.0, bool(terminated[world]), bool(truncated[world]), {"success": bool(success[world])}
            )
            ended = episode_outcome(step, slot.steps, slot.max_steps)
            if ended is not None:
                finish(world, *ended)
        env.sim.check_overflow()
        observe(start([w for w in range(env.num_worlds) if w not in slots]))
    timing.sim_s = time.perf_counter() - started - timing.policy_s - timing.policy_input_transfer_s
    return [finished[i] for i in range(len(requests))]


def _push_chunks(policy: Any, history: dict[str, torch.Tensor], worlds: list[int], slots: dict[int, _Slot],
                 action_shape: tuple[int, ...], finish: Any, timing: BatchedTiming) -> None:  # fmt: skip
    """One ``predict_chunks`` for ``worlds``; bad chunks end their episodes with a cause."""
    started = time.perf_counter()
    device_inputs = bool(getattr(policy, "accepts_device_tensors", False))
    index = torch.as_tensor(worlds, dtype=torch.long)
    batch: dict[str, Any] = {}
    for key, value in history.items():
        rows = value[index.to(value.device)]
        batch[key] = rows if device_inputs else rows.cpu().numpy()
    batch[INSTRUCTION_KEY] = [slots[w].instruction for w in worlds]
    prepared = time.perf_counter()
    timing.policy_input_transfer_s += prepared - started
    try:
        deliver_chunks(policy, batch, worlds, [action_shape] * len(worlds),
                       lambda world, chunk: slots[world].executor.push_chunk(chunk), finish)  # fmt: skip
    finally:
        timing.policy_s += time.perf_counter() - prepared


def _keep_frames(slots: dict[int, _Slot], observation: dict[str, torch.Tensor]) -> None:
    """The video camera's frame of every filmed world (host copies of those worlds only)."""
    filmed = [w for w, s in slots.items() if s.frames is not None]
    key = (
        VIDEO_CAMERA
        if VIDEO_CAMERA in observation
        else next((k for k in sorted(observation) if is_image_key(k)), None)
    )
    if not filmed or key is None:
        return
    frames = (
        observation[key][torch.as_tensor(filmed, dtype=torch.long).to(observation[key].device)].cpu().numpy()
    )
    for world, frame in zip(filmed, frames, strict=True):
        slots[world].frames.append(frame)  # type: ignore[union-attr]
