"""One ``vla deploy`` run: check the policy against the robot, run the episodes, always keep the record.

:func:`run_deploy` is what the command does once its arguments are checked:

1. the policy's features (cameras, image size, state and action dimensions and names) are checked
   against what the robot declares, before it moves (one
   :class:`~vla.policy_spec.FeatureMismatchError` naming both sides);
2. each episode warms up (the first chunk, robot at rest) and runs the fixed-rate loop;
3. however the run ends, the statistics JSON is written with every finished episode and how it
   ended: all episodes done, a signal (exit status 128 + signal: 130 for SIGINT, 143 for SIGTERM,
   as shells expect), or a failure (a policy server lost beyond reconnection, a robot error): the
   statistics are written, then the error propagates (the command line prints it, exit status 1).

A lost policy server does not end a run by itself: :class:`~vla_client.remote.RemoteInference`
announces the loss, the loop holds the robot while it reconnects with backoff, and the episode goes
on once the server is back; only a server that stays away ends the run.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla.deploy.inference import ChunkPlanner
from vla.deploy.loop import LoopConfig, run_loop
from vla.deploy.robot import FeatureMap, declared_features
from vla.deploy.safety import ActionFilter, StopRequest, Watchdog
from vla.machine import machine_info
from vla.policies.executor import ChunkExecutor
from vla.policy_spec import check_policy_features, replan_interval, spec_field
from vla_client.requester import InferenceLost


def auto_prefetch(latency_s: float, hz: float, replan_every: int, chunk_size: int) -> int:
    """Steps ahead to request the next chunk: the latency in periods, 1.5x for variance, plus one."""
    needed = math.ceil(1.5 * latency_s * hz) + 1
    return max(1, min(needed, chunk_size - 1))


def signal_exit_status(reason: str | None) -> int:
    """128 + the signal's number (SIGINT 130, SIGTERM 143), what shells report for a signalled run."""
    try:
        return 128 + int(signal.Signals[reason or ""])
    except KeyError:
        return 128 + int(signal.SIGTERM)


@dataclass
class DeployRun:
    """What a run did: the finished episodes, and why it ended."""

    episodes: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str = "none"
    error: BaseException | None = None

    @property
    def exit_status(self) -> int:
        """0: every episode ran; 128 + signal after a signal; 1 when the run could not finish."""
        if self.error is not None:
            return 1
        if self.stopped_by.startswith("signal:"):
            return signal_exit_status(self.stopped_by.removeprefix("signal:"))
        return 0


def run_episodes(cfg: Any, robot: Any, requester: Any, spec: Any, stop: StopRequest, run: DeployRun) -> None:
    """Run ``cfg.episodes`` episodes of ``robot`` with ``requester``'s chunks, appending to ``run``.

    Raises what ends the run early (the features do not fit, inference lost for good, a robot
    error); ``run`` then holds the episodes finished before it.
    """
    n_obs_steps = int(spec_field(spec, "n_obs_steps", 1))
    replan_every = int(cfg.replan_every or replan_interval(spec))
    chunk_size = int(spec_field(spec, "chunk_size", replan_every))
    executor = ChunkExecutor(replan_every, cfg.temporal_ensemble)
    planner = ChunkPlanner(requester, executor, n_obs_steps=n_obs_steps, prefetch=0)
    low, high = robot.action_bounds if hasattr(robot, "action_bounds") else (None, None)
    action_filter = ActionFilter(low, high, cfg.max_delta)
    watchdog_ms = (cfg.watchdog_observation_ms, cfg.watchdog_plan_ms)
    config = LoopConfig(
        hz=float(cfg.hz), max_steps=cfg.max_steps, status_stream=sys.stderr if cfg.status else None
    )
    robot.connect()
    try:
        shapes, names = declared_features(robot)  # before anything moves
        check_policy_features(spec, shapes, names, source=f"robot {cfg.get('robot', '')}".strip())
        for episode in range(int(cfg.episodes)):
            if stop.requested:
                run.stopped_by = f"signal:{stop.reason}"
                break
            if episode > 0 and hasattr(robot, "start_episode"):
                robot.start_episode(None if cfg.seed is None else int(cfg.seed) + episode)
            instruction = getattr(robot, "instruction", "") or str(cfg.get("instruction") or "")
            planner.reset()
            action_filter.reset()
            features = FeatureMap.from_features(robot.observation_features, robot.action_features)
            planner.warmup(features.to_observation(robot.get_observation(), instruction))
            if cfg.prefetch == "auto":
                planner.prefetch = auto_prefetch(
                    planner.latencies_s[-1], float(cfg.hz), replan_every, chunk_size
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
            run.episodes.append(summary)
            run.stopped_by = summary["stopped_by"]
            planner.latencies_s.clear()
            planner.server_timings.clear()
            if planner.failure is not None:  # the loop stopped holding: inference is gone for good
                raise InferenceLost(planner.failure)
            if run.stopped_by.startswith("signal:"):
                break
    finally:
        robot.disconnect()


def write_stats(path: Path, run: DeployRun, argv: Sequence[str], started: float, requester: Any) -> None:
    """The statistics JSON of a run, finished or not."""
    successes = [e["success"] for e in run.episodes if e.get("success") is not None]
    report = {
        "command": ["vla", "deploy", *argv],
        "machine": machine_info(),
        "started": started,
        "stopped_by": run.stopped_by,
        "error": None if run.error is None else f"{type(run.error).__name__}: {run.error}",
        "exit_status": run.exit_status,
        "success_rate": sum(successes) / len(successes) if successes else None,
        "server": {  # how often a policy server was lost and came back (remote inference only)
            "losses": getattr(requester, "losses", None),
            "reconnects": getattr(requester, "reconnects", None),
        },
        "episodes": run.episodes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))


def run_deploy(
    cfg: Any, argv: Sequence[str], robot: Any, requester: Any, spec: Any, stop: StopRequest
) -> int:
    """Run the episodes, write ``cfg.stats`` whatever happens, and return the exit status.

    An error that ended the run early is raised again once the statistics are written.
    """
    run = DeployRun()
    started = time.time()
    try:
        run_episodes(cfg, robot, requester, spec, stop, run)
    except BaseException as exc:
        run.error = exc
        run.stopped_by = f"error:{type(exc).__name__}"
        raise
    finally:
        if run.stopped_by == "none" and stop.requested:
            run.stopped_by = f"signal:{stop.reason}"
        path = Path(str(cfg.stats))
        write_stats(path, run, argv, started, requester)
        print(f"vla deploy: {len(run.episodes)} of {cfg.episodes} episodes, stopped by {run.stopped_by}; "
              f"statistics in {path}", file=sys.stderr, flush=True)  # fmt: skip
    return run.exit_status
