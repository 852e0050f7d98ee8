"""``vla deploy``: run a policy on a robot in a fixed-rate control loop.

    vla deploy checkpoint=<dir> robot=sim env=<config> task=<task> hz=50 [episodes=1] [seed=...]
               [server=ws://host:port] [device=auto] [precision=auto|fp32|bf16|int8] [flow_steps=<checkpoint's>]
               [replan_every=<policy's>] [prefetch=auto] [temporal_ensemble=M]
               [max_delta=X] [watchdog_observation_ms=100] [watchdog_plan_ms=1000] [stats=deploy_stats.json]

``checkpoint`` may be a ``vla train`` checkpoint, a lerobot ``pretrained_model`` folder or a ``vla
export`` directory (:mod:`vla.policies.sources`). With ``server=`` the policy runs in ``vla serve`` (no
checkpoint needed here, nor torch); otherwise the checkpoint is loaded in this process and predicts in
a background thread. Either way the next chunk is prefetched while the current one executes. Ctrl-C
or SIGTERM stops the loop, leaves the robot holding, still writes the statistics and exits with 130 /
143; a lost policy server is reconnected to while the robot holds, and a run that cannot finish still
writes its statistics and exits with status 1 (:mod:`vla.deploy.session`).

Arguments follow Hydra's override grammar (:mod:`vla.config`) and are checked against
:class:`DeployCommand` before the robot moves: an unknown key (a misspelt ``max_delta`` would run
without the rate limit), a wrong type, a value out of range or an unknown task is refused in one
line (exit status 2); so are a missing checkpoint or a server that does not answer (exit status 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from vla.cli_errors import ConfigError, cli_main
from vla.config import compose_command
from vla.config_schema import above, at_least, config_group
from vla.deploy.safety import stop_on_signals
from vla.deploy.session import run_deploy
from vla_client.requester import ThreadedInference


@dataclass
class DeployCommand:
    """``vla deploy``'s keys (``env.<option>`` for the simulated robot's env options)."""

    env: Any = config_group()
    checkpoint: str | None = None
    server: str | None = None  # ws://host:port of `vla serve`: no checkpoint needed here
    robot: str = "sim"  # a key of ROBOTS (checked in main: the registry is defined below)
    task: str | None = None  # default: the env config's first task
    instruction: str | None = None  # for robots that do not say their own
    hz: float = above(50.0, 0.0)
    episodes: int = at_least(1, 1)
    seed: int | None = None
    max_steps: int | None = at_least(None, 1)
    device: str = "auto"
    precision: str = "auto"
    flow_steps: int | None = at_least(None, 1)  # flow head: Euler steps per chunk (None: the checkpoint's)
    replan_every: int | None = at_least(None, 1)  # None: the policy's own (its spec's replan_every)
    prefetch: Any = "auto"  # "auto" or steps ahead (int)
    temporal_ensemble: float | None = above(None, 0.0)
    max_delta: float | None = above(None, 0.0)  # the safety rate limit per step (None: none)
    watchdog_observation_ms: float | None = above(100.0, 0.0)
    watchdog_plan_ms: float | None = above(1000.0, 0.0)
    stats: str = "deploy_stats.json"
    status: bool = True


def _sim_robot(cfg: Any) -> Any:
    from vla.deploy.sim_robot import SimRobot
    from vla.envs.registry import suite_module, task_names

    if "env" not in cfg:
        raise ConfigError(f"robot={cfg.robot} needs env=<config> (a file of envs/)")
    if cfg.task is not None:
        try:
            suite_module(cfg.env.suite).task_names([cfg.task])
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"task={cfg.task!r}: {exc.args[0] if exc.args else exc}") from None
    task = cfg.task or task_names(cfg.env)[0]
    return SimRobot.from_config(cfg.env, task, seed=cfg.seed)


def _lerobot_sim_robot(cfg: Any) -> Any:
    from vla.deploy.lerobot_robot import LerobotRobotAdapter, SimLerobotRobot, SimLerobotRobotConfig

    robot = SimLerobotRobot(SimLerobotRobotConfig(env=dict(cfg.env), task=cfg.task, seed=cfg.seed))
    return LerobotRobotAdapter(robot)


# robot=<name> -> builder of a Robot from the composed config.
ROBOTS: dict[str, Callable[[Any], Any]] = {"sim": _sim_robot, "lerobot_sim": _lerobot_sim_robot}


def _say(message: str) -> None:
    print(f"vla deploy: {message}", file=sys.stderr, flush=True)


def _requester(cfg: Any) -> tuple[Any, Any]:
    """The inference requester and the policy's spec (a PolicySpec, or the server's spec dict)."""
    if cfg.server:
        from vla_client.remote import RemoteInference

        if cfg.flow_steps is not None:  # the server owns the policy and its sampler
            raise ConfigError("flow_steps is the server's setting: give it to vla serve, not with server=")

        try:
            remote = RemoteInference(str(cfg.server), notify=_say)  # announces losses and reconnections
        except OSError as exc:  # refused, unreachable, timed out: say which server
            raise ConnectionError(f"cannot reach the policy server at {cfg.server}: {exc}") from exc
        return remote, remote.spec
    if not cfg.checkpoint:
        raise ConfigError("give checkpoint=<dir> (in-process inference) or server=ws://host:port")
    from vla.policies.sources import load_stored_policy

    policy = load_stored_policy(
        str(cfg.checkpoint), device=str(cfg.device), precision=str(cfg.precision), flow_steps=cfg.flow_steps
    )
    return ThreadedInference(policy.predict_chunk), policy.spec


def deploy_config(argv: Sequence[str]) -> DictConfig:
    """The checked config of ``vla deploy <argv>``; raises ConfigError naming a bad argument."""
    cfg = compose_command("deploy", argv, DeployCommand)
    if cfg.robot not in ROBOTS:
        raise ConfigError(f"robot={cfg.robot!r}: choose one of {', '.join(sorted(ROBOTS))}")
    if cfg.prefetch != "auto" and not (isinstance(cfg.prefetch, int) and cfg.prefetch >= 0):
        raise ConfigError(f"prefetch={cfg.prefetch!r}: give auto or a number of steps >= 0")
    return cfg


@cli_main("deploy")
def main(argv: Sequence[str]) -> int:
    """Compose the configuration, run the episodes, write the statistics JSON."""
    cfg = deploy_config(argv)
    with stop_on_signals() as stop:
        robot = ROBOTS[cfg.robot](cfg)
        requester, spec = _requester(cfg)
        try:
            # Statistics are written however the run ends; the status says how (session module).
            return run_deploy(cfg, argv, robot, requester, spec, stop)
        finally:
            requester.close()
