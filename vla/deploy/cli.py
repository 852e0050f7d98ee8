"""``vla deploy``: run a policy on a robot in a fixed-rate control loop.

    vla deploy checkpoint=<dir> robot=sim env=<config> task=<task> hz=50 [episodes=1] [seed=...]
               [server=ws://host:port] [device=auto] [precision=auto|fp32|bf16|int8] [replan_every=8] [prefetch=auto] [temporal_ensemble=M]
               [max_delta=X] [watchdog_observation_ms=100] [watchdog_plan_ms=1000] [stats=deploy_stats.json]

``checkpoint`` may be a ``vla train`` checkpoint, a lerobot ``pretrained_model`` folder or a ``vla
export`` directory (:mod:`vla.deploy.sources`). With ``server=`` the policy runs in ``vla serve`` (no
checkpoint needed here, nor torch); otherwise the checkpoint is loaded in this process and predicts in
a background thread. Either way the next chunk is prefetched while the current one executes. Ctrl-C
or SIGTERM stops the loop, leaves the robot holding and still writes the statistics.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vla.deploy.inference import ChunkPlanner
from vla.deploy.loop import LoopConfig, run_loop
from vla.deploy.requester import ThreadedInference
from vla.deploy.robot import FeatureMap
from vla.deploy.safety import ActionFilter, StopRequest, Watchdog, stop_on_signals
from vla.machine import machine_info
from vla.policies.executor import ChunkExecutor

DEFAULTS: dict[str, Any] = {
    "checkpoint": None, "robot": "sim", "task": None, "hz": 50.0, "episodes": 1, "seed": None,
    "max_steps": None, "server": None, "device": "auto", "precision": "auto", "replan_every": 8,
    "prefetch": "auto",
    "temporal_ensemble": None, "max_delta": None, "watchdog_observation_ms": 100.0,
    "watchdog_plan_ms": 1000.0, "stats": "deploy_stats.json", "status": True,
}  # fmt: skip


def _sim_robot(cfg: Any) -> Any:
    from vla.deploy.sim_robot import SimRobot
    from vla.envs.registry import task_names

    if "env" not in cfg:
        raise SystemExit("vla deploy: robot=sim needs env=<config> (a file of envs/)")
    task = cfg.task or task_names(cfg.env)[0]
    return SimRobot.from_config(cfg.env, task, seed=cfg.seed)


def _lerobot_sim_robot(cfg: Any) -> Any:
    from vla.deploy.lerobot_robot import LerobotRobotAdapter, SimLerobotRobot, SimLerobotRobotConfig

    robot = SimLerobotRobot(SimLerobotRobotConfig(env=dict(cfg.env), task=cfg.task, seed=cfg.seed))
    return LerobotRobotAdapter(robot)


# robot=<name> -> builder of a Robot from the composed config.
ROBOTS: dict[str, Callable[[Any], Any]] = {"sim": _sim_robot, "lerobot_sim": _lerobot_sim_robot}


def auto_prefetch(latency_s: float, hz: float, replan_every: int, chunk_size: int) -> int:
    """Steps ahead to request the next chunk: the latency in periods, 1.5x for variance, plus one."""
    needed = math.ceil(1.5 * latency_s * hz) + 1
    return max(1, min(needed, chunk_size - 1))


def _requester(cfg: Any) -> tuple[Any, int, int]:
    """The inference requester, the policy's n_obs_steps and its chunk size."""
    if cfg.server:
        from vla.deploy.client import RemoteInference

        remote = RemoteInference(str(cfg.server))
        return (
            remote,
            int(remote.spec.get("n_obs_steps", 1)),
            int(remote.spec.get("chunk_size", cfg.replan_every)),
        )
    if not cfg.checkpoint:
        raise SystemExit("vla deploy: give checkpoint=<dir> (in-process inference) or server=ws://host:port")
    from vla.deploy.sources import load_deploy_policy

    policy = load_deploy_policy(str(cfg.checkpoint), device=str(cfg.device), precision=str(cfg.precision))
    return ThreadedInference(policy.predict_chunk), int(policy.spec.n_obs_steps), int(policy.spec.chunk_size)


def run_episodes(
    cfg: Any, robot: Any, requester: Any, n_obs_steps: int, chunk_size: int, stop: StopRequest
) -> list[dict]:
    """Run ``cfg.episodes`` episodes (until a stop request); one summary per episode."""
    executor = ChunkExecutor(int(cfg.replan_every), cfg.temporal_ensemble)
    planner = ChunkPlanner(requester, executor, n_obs_steps=n_obs_steps, prefetch=0)
    low, high = robot.action_bounds if hasattr(robot, "action_bounds") else (None, None)
    action_filter = ActionFilter(low, high, cfg.max_delta)
    watchdog_ms = (cfg.watchdog_observation_ms, cfg.watchdog_plan_ms)
    config = LoopConfig(
        hz=float(cfg.hz), max_steps=cfg.max_steps, status_stream=sys.stderr if cfg.status else None
    )
    results: list[dict] = []
    robot.connect()
    try:
        for episode in range(int(cfg.episodes)):
            if stop.requested:
                break
            if episode > 0 and hasattr(robot, "start_episode"):
                robot.start_episode(None if cfg.seed is None else int(cfg.seed) + episode)
            instruction = getattr(robot, "instruction", "") or str(cfg.get("instruction", ""))
            planner.reset()
            action_filter.reset()
            features = FeatureMap.from_features(robot.observation_features, robot.action_features)
            planner.warmup(features.to_observation(robot.get_observation(), instruction))
            if cfg.prefetch == "auto":
                planner.prefetch = auto_prefetch(
                    planner.latencies_s[-1], float(cfg.hz), int(cfg.replan_every), chunk_size
                )
            else:
                planner.prefetch = int(cfg.prefetch)
            print(f"vla deploy: episode {episode + 1}/{cfg.episodes} running at {cfg.hz} Hz, "
                  f"prefetch {planner.prefetch}: {instruction!r}", file=sys.stderr, flush=True)  # fmt: skip
            watchdog = Watchdog(*(None if ms is None else float(ms) / 1e3 for ms in watchdog_ms))
            summary = run_loop(robot, planner, instruction, config, action_filter, watchdog, stop,
                               done=lambda: bool(getattr(robot, "episode_over", False)))  # fmt: skip
            summary.update(episode=episode, instruction=instruction, prefetch=planner.prefetch,
                           success=getattr(robot, "success", None))  # fmt: skip
            results.append(summary)
            planner.latencies_s.clear()
            planner.server_timings.clear()
    finally:
        robot.disconnect()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Compose the configuration, run the episodes, write the statistics JSON."""
    from vla.config import compose

    cfg = compose(list(argv or []), defaults=DEFAULTS)
    if cfg.robot not in ROBOTS:
        raise SystemExit(f"vla deploy: unknown robot {cfg.robot!r}; choose one of {sorted(ROBOTS)}")
    for key in ("hz", "episodes", "replan_every"):
        if not float(cfg[key]) > 0:
            raise SystemExit(f"vla deploy: {key} must be positive, got {cfg[key]}")
    started = time.time()
    with stop_on_signals() as stop:
        robot = ROBOTS[cfg.robot](cfg)
        requester, n_obs_steps, chunk_size = _requester(cfg)
        try:
            episodes = run_episodes(cfg, robot, requester, n_obs_steps, chunk_size, stop)
        finally:
            requester.close()
    successes = [e["success"] for e in episodes if e.get("success") is not None]
    report = {
        "command": ["vla", "deploy", *(argv or [])],
        "machine": machine_info(),
        "started": started,
        "stopped_by": episodes[-1]["stopped_by"]
        if episodes
        else (f"signal:{stop.reason}" if stop.requested else "none"),
        "success_rate": sum(successes) / len(successes) if successes else None,
        "episodes": episodes,
    }
    path = Path(str(cfg.stats))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"vla deploy: {len(episodes)} episodes, success rate {report['success_rate']}, "
          f"stopped by {report['stopped_by']}; statistics in {path}", file=sys.stderr, flush=True)  # fmt: skip
    return 0
