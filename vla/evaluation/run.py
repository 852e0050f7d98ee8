"""Closed-loop rollouts: batched policy inference over env worker slots, one ChunkExecutor per slot.

All active slots advance in lockstep: the slots whose executor needs a chunk are batched into one
``predict_chunks`` call, then every slot's next action is sent to its worker and all answers are
collected. A slot whose episode ends starts the next pending episode right away.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla.envs.probe import declared_features
from vla.evaluation import results as R
from vla.evaluation.vector import EnvPool, StepResult
from vla.features import INSTRUCTION_KEY, camera_key, is_image_key
from vla.policies.executor import ChunkExecutor
from vla.policy_spec import check_policy_features

DEFAULT_MAX_STEPS = 1000  # only for envs that declare no step limit of their own
VIDEO_CAMERA = camera_key("front")
# Keys an env may put in ``info`` to say why an episode ended without success.
FAILURE_REASON_KEYS = ("failure_reason", "failure", "termination_reason", "reason")


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to roll out."""

    task: str
    seed: int
    phrasing: str


@dataclass
class _SlotState:
    request: EpisodeRequest
    history: deque[dict[str, Any]]
    executor: ChunkExecutor
    action_shape: tuple[int, ...]
    max_steps: int
    instruction: str
    fps: float | None = None
    steps: int = 0
    frames: list[np.ndarray] = field(default_factory=list)


# Called when an episode ends with its result, its front-camera frames (empty unless kept) and the
# env's frame rate (None if it declares none); returns the video file name it wrote, or None.
EpisodeCallback = Callable[[R.EpisodeResult, list[np.ndarray], float | None], str | None]


@dataclass(frozen=True)
class RolloutSettings:
    """How an evaluation rolls episodes out, whatever runs the environments."""

    num_envs: int  # env slots: worker processes, or worlds of a batched simulator
    replan_every: int
    temporal_ensemble: float | None
    max_steps: int | None
    keep_frames: bool
    on_episode: EpisodeCallback | None


def stack_history(histories: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """A policy batch: each array key as (B, T, ...), ``instruction`` as a list of B strings."""
    first = histories[0][-1]
    keys = [k for k in first if k != INSTRUCTION_KEY and isinstance(first[k], np.ndarray | np.generic)]
    batch: dict[str, Any] = {}
    for key in keys:
        try:
            batch[key] = np.stack([np.stack([frame[key] for frame in history]) for history in histories])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"observations of the env slots disagree on {key!r}: {exc}") from exc
    batch[INSTRUCTION_KEY] = [str(history[-1].get(INSTRUCTION_KEY, "")) for history in histories]
    return batch


def episode_outcome(result: StepResult, steps: int, max_steps: int) -> tuple[str, str] | None:
    """``(outcome, detail)`` if the episode has ended, else None."""
    if result.error is not None:
        return R.ENV_ERROR, result.error.strip().splitlines()[-1]
    if bool(result.info.get("success", False)):
        return R.SUCCESS, ""
    reason = next((str(result.info[k]) for k in FAILURE_REASON_KEYS if result.info.get(k)), None)
    if result.terminated:
        return (reason or R.TERMINATED), ""
    if result.truncated or steps >= max_steps:
        return (reason or R.TIMEOUT), ""
    return None


def chunk_problem(chunk: np.ndarray, action_shape: tuple[int, ...]) -> str | None:
    """Why ``chunk`` (H, A) cannot drive an env with actions of ``action_shape``, or None."""
    if chunk.ndim != 1 + len(action_shape) or tuple(chunk.shape[1:]) != action_shape or chunk.shape[0] < 1:
        return f"chunk of shape {chunk.shape} for actions of shape {action_shape}"
    if not np.isfinite(chunk).all():  # how the runtime marks a chunk its action tokenizer cannot decode
        return "chunk contains NaN or infinite values (undecodable or diverged prediction)"
    return None


def run_episodes(
    policy: Any,
    pool: EnvPool,
    requests: Sequence[EpisodeRequest],
    *,
    replan_every: int,
    temporal_ensemble: float | None,
    max_steps: int | None = None,
    keep_frames: bool = False,
    on_episode: EpisodeCallback | None = None,
) -> list[R.EpisodeResult]:
    """Roll out every request on ``pool`` with ``policy``; results come back in request order."""
    n_obs_steps = int(getattr(policy.spec, "n_obs_steps", 1) or 1)
    with_expert = bool(getattr(policy, "uses_expert", False))
    pending = deque(enumerate(requests))
    order: dict[int, int] = {}  # slot -> index of its request
    active: dict[int, _SlotState] = {}
    finished: dict[int, R.EpisodeResult] = {}

    def finish(slot: int, outcome: str, detail: str = "") -> None:
        state = active.pop(slot)
        req = state.request
        result = R.EpisodeResult(
            task=req.task,
            seed=req.seed,
            phrasing=req.phrasing,
            instruction=state.instruction,
            success=outcome == R.SUCCESS,
            length=state.steps,
            outcome=outcome,
            detail=detail,
        )
        if on_episode is not None:
            result.video = on_episode(result, state.frames, state.fps)
        finished[order.pop(slot)] = result

    def start(free: list[int]) -> None:
        """Reset free slots onto pending episodes (a slot whose env fails to reset takes the next)."""
        while free and pending:
            slots = free[: len(pending)]
            free = free[len(slots) :]
            for slot in slots:
                index, req = pending.popleft()
                order[slot] = index
                pool.send_reset(slot, req.task, req.seed, req.phrasing, with_expert)
                executor = ChunkExecutor(replan_every=replan_every, temporal_ensemble=temporal_ensemble)
                active[slot] = _SlotState(req, deque(maxlen=n_obs_steps), executor, (), 0, "")
            for slot, result in pool.collect(slots).items():
                state = active[slot]
                if result.error is not None:  # the env could not even reset: record it, move on
                    finish(slot, R.ENV_ERROR, result.error.strip().splitlines()[-1])
                    free.append(slot)
                    continue
                state.action_shape = result.action_shape or ()
                state.max_steps = max_steps or result.max_episode_steps or DEFAULT_MAX_STEPS
                state.instruction = str(result.observation.get(INSTRUCTION_KEY, ""))
                state.fps = result.render_fps
                # Pad the history at the start by repeating the first frame, as training does.
                state.history.extend([result.observation] * n_obs_steps)
                _keep_frame(state, result.observation, keep_frames)

    start(list(range(pool.num_envs)))
    while active:
        needing = [s for s, st in active.items() if st.executor.needs_chunk()]
        if needing:
            _push_chunks(policy, [active[s] for s in needing], needing, finish)
        stepping = list(active)
        for slot in stepping:
            pool.send_step(slot, active[slot].executor.next_action())
        for slot, result in pool.collect(stepping).items():
            state = active[slot]
            state.steps += 1
            if result.error is None:
                state.history.append(result.observation)
                _keep_frame(state, result.observation, keep_frames)
            ended = episode_outcome(result, state.steps, state.max_steps)
            if ended is not None:
                finish(slot, *ended)
        start([s for s in range(pool.num_envs) if s not in active])
    return [finished[i] for i in range(len(requests))]


def _push_chunks(
    policy: Any, states: list[_SlotState], slots: list[int], finish: Callable[[int, str, str], None]
) -> None:
    """One batched ``predict_chunks`` for ``slots``; bad chunks end their episodes with a cause."""
    executors = dict(zip(slots, (st.executor for st in states), strict=True))
    shapes = [st.action_shape for st in states]
    batch = stack_history([st.history for st in states])
    deliver_chunks(
        policy, batch, slots, shapes, lambda slot, chunk: executors[slot].push_chunk(chunk), finish
    )


def deliver_chunks(
    policy: Any,
    batch: Mapping[str, Any],
    slots: Sequence[int],
    action_shapes: Sequence[tuple[int, ...]],
    push: Callable[[int, np.ndarray], None],
    finish: Callable[[int, str, str], None],
) -> None:
    """``policy.predict_chunks(batch)`` (row i for ``slots[i]``), each chunk handed to ``push(slot,
    chunk)``; a policy that raises, or a chunk that cannot drive its env, ends the episode instead."""
    try:
        chunks = np.asarray(policy.predict_chunks(batch), dtype=np.float32)
        if chunks.ndim < 2 or chunks.shape[0] != len(slots):
            raise ValueError(f"predict_chunks returned shape {chunks.shape} for a batch of {len(slots)}")
    except Exception as exc:  # a policy that cannot decode/predict fails these episodes, visibly
        for slot in slots:
            finish(slot, R.POLICY_ERROR, f"{type(exc).__name__}: {exc}")
        return
    for slot, shape, chunk in zip(slots, action_shapes, chunks, strict=True):
        problem = chunk_problem(chunk, shape)
        if problem is not None:
            finish(slot, R.INVALID_ACTION, problem)
        else:
            push(slot, chunk)


def check_env_fit(policy: Any, env_cfg: Mapping[str, Any], task: str) -> None:
    """Raise :class:`~vla.policy_spec.FeatureMismatchError` naming both sides when ``policy`` does
    not fit the environments of ``env_cfg`` (cameras, image size, state and action dimensions and
    names, as the env declares them): a setup error, found before any worker starts.

    A spec with its own ``check_features(features, names, source)`` decides for itself.
    """
    shapes, names = declared_features(env_cfg, task)
    source = f"env {env_cfg.get('name') or env_cfg.get('suite')} ({task})"
    check = getattr(policy.spec, "check_features", None)
    if callable(check):
        check(shapes, names, source=source)
    else:
        check_policy_features(policy.spec, shapes, names, source)


def _keep_frame(state: _SlotState, observation: Mapping[str, Any], keep: bool) -> None:
    if not keep:
        return
    key = (
        VIDEO_CAMERA
        if VIDEO_CAMERA in observation
        else next((k for k in sorted(observation) if is_image_key(k)), None)
    )
    if key is not None:
        state.frames.append(np.asarray(observation[key]))
