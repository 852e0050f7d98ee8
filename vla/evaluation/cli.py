"""``vla eval``: evaluate a policy in simulation and write a report.

    vla eval checkpoint=<dir> env=<config> [episodes_per_task=10] [phrasing=train|heldout|both]
             [replan_every=8] [temporal_ensemble=<m>] [num_envs=2] [videos=4] [out=<dir>] [device=auto]
             [precision=auto|fp32|bf16|int8] [flow_noise=fresh|fixed] [flow_noise_scale=1.0]
             [flow_steps=<checkpoint's>] [policy=checkpoint|scripted|lerobot] [max_steps=<n>] [progress=true] [env.<option>=<value> ...]

``flow_noise`` (flow-head checkpoints): ``fresh`` starting noise for every chunk (the default, what
``vla serve`` and ``vla deploy`` do), or the ``fixed`` noise every time (results before 2026-12-02);
``flow_noise_scale`` multiplies that noise (1: as trained; 0: every chunk starts at zero);
``flow_steps`` samples with that many Euler steps instead of the checkpoint's own (the latency knob).

``policy=scripted`` evaluates the suite's scripted expert (no checkpoint), an upper-bound reference.
Tasks are the env config's ``tasks``; pick others with ``env.tasks=[name,...]``.

Arguments follow Hydra's override grammar (:mod:`vla.config`) and are checked against
:class:`EvalCommand` and the env's options before anything loads: an unknown key, a wrong type or a
value out of range is refused in one line (exit status 2); so are a missing checkpoint or one whose
cameras or shapes do not fit the env (exit status 1), and no empty output folder is left behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vla.cli_errors import cli_main
from vla.config import ConfigError, compose_command
from vla.config_schema import above, at_least, choice, config_group
from vla.evaluation.api import evaluate, plain_env_config
from vla.evaluation.loaders import POLICY_LOADERS, load_eval_policy
from vla.evaluation.protocol import PHRASING_SETS
from vla.policies.runtime import FLOW_NOISE


@dataclass
class EvalCommand:
    """``vla eval``'s keys (``env.<option>`` for the env's own options)."""

    env: Any = config_group()
    checkpoint: str | None = None
    policy: str = choice("checkpoint", POLICY_LOADERS)  # where the policy comes from, not a config group
    episodes_per_task: int = at_least(10, 1)
    phrasing: str = choice("both", PHRASING_SETS)
    replan_every: int | None = at_least(None, 1)  # None: a whole chunk
    temporal_ensemble: float | None = above(None, 0.0)
    num_envs: int = at_least(2, 1)
    videos: int = at_least(4, 0)
    out: str | None = None
    device: str = "auto"
    precision: str = "auto"
    flow_noise: str = choice("fresh", FLOW_NOISE)
    flow_noise_scale: float = at_least(1.0, 0.0)
    flow_steps: int | None = at_least(None, 1)  # None: the checkpoint's own
    max_steps: int | None = at_least(None, 1)
    progress: bool = True


def eval_config(argv: Sequence[str]) -> DictConfig:
    """The checked config of ``vla eval <argv>``; raises ConfigError naming a bad argument."""
    cfg = compose_command("eval", argv, EvalCommand)
    if "env" not in cfg:
        raise ConfigError("name an env config: env=<name> (a file of the envs/ config group)")
    if cfg.policy != "scripted" and not cfg.checkpoint:
        raise ConfigError(
            f"give checkpoint=<dir> (policy={cfg.policy}), or policy=scripted for the scripted expert"
        )
    return cfg


@cli_main("eval")
def main(argv: Sequence[str]) -> int:
    """Run ``vla eval``; returns the exit status (2 for bad arguments)."""
    argv = list(argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    cfg = eval_config(argv)
    env_cfg = plain_env_config(cfg.env)
    out = Path(cfg.out or _default_out(cfg.policy, str(env_cfg.get("name", env_cfg["suite"]))))
    created = not out.exists()
    try:
        sampler = {
            "flow_noise": cfg.flow_noise,
            "flow_noise_scale": cfg.flow_noise_scale,
            "flow_steps": cfg.flow_steps,
        }
        policy = load_eval_policy(cfg.policy, cfg.checkpoint, cfg.device, cfg.precision, **sampler)
        report = evaluate(
            policy,
            env_cfg,
            episodes_per_task=cfg.episodes_per_task,
            phrasings=cfg.phrasing,
            replan_every=cfg.replan_every,
            temporal_ensemble=cfg.temporal_ensemble,
            num_envs=cfg.num_envs,
            video_count=cfg.videos,
            out_dir=out,
            max_steps=cfg.max_steps,
            progress=cfg.progress,
            policy_name=cfg.policy,
            checkpoint=cfg.checkpoint if cfg.policy != "scripted" else None,
            argv=["vla", "eval", *argv],
        )
    except BaseException:
        if created and out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
            shutil.rmtree(out)  # a failed run leaves no empty output folder behind
        raise
    for row in report.overall:
        print(f"{row.phrasing:>8} phrasings: success {row.success_rate:.1%} "
              f"[{row.ci_low:.1%}, {row.ci_high:.1%}] over {row.episodes} episodes")  # fmt: skip
    print(f"report: {out / 'report.md'}")
    return 0


def _default_out(policy: str, env_name: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("outputs") / "eval" / f"{stamp}-{policy}-{env_name}")
