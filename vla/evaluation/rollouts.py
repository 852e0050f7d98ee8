"""Where an evaluation's episodes run: env worker processes, or one batched simulator on a device.

:func:`roll_out` picks by the env config: a suite backend that simulates many worlds in one process
(``env.backend=warp``, :func:`vla.envs.registry.runs_batched`) runs :func:`batched_rollout`, any
other :func:`process_rollout` (``EnvPool``). Both run the same protocol and return the same results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vla.evaluation import results as R
from vla.evaluation.batched import BatchedTiming, run_batched_episodes
from vla.evaluation.run import EpisodeRequest, RolloutSettings, run_episodes
from vla.evaluation.vector import EnvPool


@dataclass
class Rollout:
    """The episodes' results and how the run went."""

    episodes: list[R.EpisodeResult]
    startup_s: float  # workers or the simulator built, kernels loaded
    rollout_s: float
    backend: str  # classic (worker processes) or the batched backend's name
    sim_device: str  # where the simulation ran
    timing: dict[str, float] = field(default_factory=dict)  # backend-specific break-down


def process_rollout(policy: Any, env_cfg: Mapping[str, Any], plan: Sequence[EpisodeRequest],
                    settings: RolloutSettings) -> Rollout:  # fmt: skip
    """One env worker process per slot (``EnvPool``), the policy batched in this process."""
    started = time.perf_counter()
    with EnvPool(env_cfg, min(settings.num_envs, len(plan))) as pool:
        ready = time.perf_counter()
        episodes = run_episodes(policy, pool, plan, replan_every=settings.replan_every,
                                temporal_ensemble=settings.temporal_ensemble, max_steps=settings.max_steps,
                                keep_frames=settings.keep_frames, on_episode=settings.on_episode)  # fmt: skip
        done = time.perf_counter()
        where = f"cpu ({pool.num_envs} worker processes)"  # read before the pool closes
    return Rollout(episodes, ready - started, done - ready, str(env_cfg.get("backend", "classic")), where)


def batched_rollout(policy: Any, env_cfg: Mapping[str, Any], plan: Sequence[EpisodeRequest],
                    settings: RolloutSettings) -> Rollout:  # fmt: skip
    """``num_envs`` worlds of one batched env; the simulator runs where the policy runs unless the
    env config names its ``device``."""
    from vla.envs import registry

    started = time.perf_counter()
    overrides: dict[str, Any] = {}
    policy_device = getattr(policy, "device", None)
    if env_cfg.get("device", "auto") == "auto" and policy_device is not None:
        overrides["device"] = str(getattr(policy_device, "type", policy_device))
    env = registry.make_batched_env(env_cfg, min(settings.num_envs, len(plan)), **overrides)
    ready = time.perf_counter()
    timing = BatchedTiming()
    try:
        episodes = run_batched_episodes(policy, env, plan, settings, timing)
    finally:
        env.close()
    done = time.perf_counter()
    breakdown = {"sim_s": timing.sim_s, "policy_s": timing.policy_s,
                 "policy_input_transfer_s": timing.policy_input_transfer_s}  # fmt: skip
    return Rollout(episodes, ready - started, done - ready, str(env_cfg["backend"]),
                   f"{env.sim.device.warp} ({env.num_worlds} worlds)", breakdown)  # fmt: skip


ROLLOUTS: dict[
    str, Callable[[Any, Mapping[str, Any], Sequence[EpisodeRequest], RolloutSettings], Rollout]
] = {
    "processes": process_rollout,
    "batched": batched_rollout,
}


def roll_out(policy: Any, env_cfg: Mapping[str, Any], plan: Sequence[EpisodeRequest],
             settings: RolloutSettings) -> Rollout:  # fmt: skip
    """Run ``plan`` where ``env_cfg``'s backend runs (see the module docstring)."""
    from vla.envs import registry

    kind = "batched" if registry.runs_batched(env_cfg) else "processes"
    return ROLLOUTS[kind](policy, env_cfg, plan, settings)
