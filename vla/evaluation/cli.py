"""``vla eval``: evaluate a policy in simulation and write a report.

    vla eval checkpoint=<dir> env=<config> [episodes_per_task=10] [phrasing=train|heldout|both]
             [replan_every=8] [temporal_ensemble=<m>] [num_envs=2] [videos=4] [out=<dir>] [device=auto]
             [precision=auto|fp32|bf16|int8] [policy=checkpoint|scripted|lerobot] [max_steps=<n>] [progress=true] [env.<option>=<value> ...]

``policy=scripted`` evaluates the suite's scripted expert (no checkpoint), an upper-bound reference.
Tasks are the env config's ``tasks``; pick others with ``env.tasks=[name,...]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vla.config import ConfigError, compose
from vla.evaluation.api import evaluate, plain_env_config
from vla.evaluation.loaders import POLICY_LOADERS, load_eval_policy


def _optional_float(text: str) -> float | None:
    return None if text.lower() in {"none", "null", "off", ""} else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() in {"none", "null", ""} else int(text)


def _bool(text: str) -> bool:
    if text.lower() not in {"true", "false", "1", "0", "yes", "no"}:
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() in {"true", "1", "yes"}


# key -> (parser, default). Keys starting with "env" go to the env config (vla.config.compose).
OPTIONS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "checkpoint": (str, None),
    "policy": (str, None),
    "episodes_per_task": (int, 10),
    "phrasing": (str, "both"),
    "replan_every": (_optional_int, None),
    "temporal_ensemble": (_optional_float, None),
    "num_envs": (int, 2),
    "videos": (int, 4),
    "out": (str, None),
    "device": (str, "auto"),
    "precision": (str, "auto"),
    "max_steps": (_optional_int, None),
    "progress": (_bool, True),
}


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``(eval options, env arguments for compose)``; raises ValueError naming a bad argument."""
    options = {key: default for key, (_, default) in OPTIONS.items()}
    env_args: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"argument {arg!r} is not of the form key=value")
        if key == "env" or key.startswith("env."):
            env_args.append(arg)
        elif key in OPTIONS:
            try:
                options[key] = OPTIONS[key][0](value)
            except ValueError as exc:
                raise ValueError(f"bad value for {key}: {value!r} ({exc})") from exc
        else:
            raise ValueError(f"unknown argument {key!r}; known: env, env.<option>, {', '.join(OPTIONS)}")
    if not any(a.startswith("env=") for a in env_args):
        raise ValueError("name an env config: env=<name> (a file of the envs/ config group)")
    if options["policy"] is None:
        options["policy"] = "checkpoint"
    if options["policy"] not in POLICY_LOADERS:
        raise ValueError(f"policy must be one of {sorted(POLICY_LOADERS)}, got {options['policy']!r}")
    if options["policy"] == "checkpoint" and not options["checkpoint"]:
        raise ValueError("give checkpoint=<dir> (or policy=scripted for the scripted expert)")
    return options, env_args


def main(argv: Sequence[str]) -> int:
    """Run ``vla eval``; returns the exit status (2 for bad arguments)."""
    argv = list(argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    try:
        options, env_args = parse_args(argv)
        env_cfg = plain_env_config(compose(env_args).env)
    except (ValueError, ConfigError) as exc:
        print(f"vla eval: {exc}", file=sys.stderr)
        return 2
    out = options["out"] or _default_out(options["policy"], str(env_cfg.get("name", env_cfg["suite"])))
    policy = load_eval_policy(
        options["policy"], options["checkpoint"], options["device"], options["precision"]
    )
    report = evaluate(
        policy,
        env_cfg,
        episodes_per_task=options["episodes_per_task"],
        phrasings=options["phrasing"],
        replan_every=options["replan_every"],
        temporal_ensemble=options["temporal_ensemble"],
        num_envs=options["num_envs"],
        video_count=options["videos"],
        out_dir=out,
        max_steps=options["max_steps"],
        progress=options["progress"],
        policy_name=options["policy"],
        checkpoint=options["checkpoint"] if options["policy"] != "scripted" else None,
        argv=["vla", "eval", *argv],
    )
    for row in report.overall:
        print(f"{row.phrasing:>8} phrasings: success {row.success_rate:.1%} "
              f"[{row.ci_low:.1%}, {row.ci_high:.1%}] over {row.episodes} episodes")  # fmt: skip
    print(f"report: {Path(out) / 'report.md'}")
    return 0


def _default_out(policy: str, env_name: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("outputs") / "eval" / f"{stamp}-{policy}-{env_name}")
