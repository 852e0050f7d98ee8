"""``vla train dataset=<name> policy=<name> [key=value ...]``.

Arguments are composed by :func:`vla.config.compose_command` (Hydra's compose API and override
grammar) and checked against :class:`TrainCommand`:

- ``dataset=<name>`` (its config's ``out:`` is the store) or ``store=<path>``;
- ``policy=<name>`` (default ``tiny``): ``model:`` (any :class:`vla.model.model.VLAConfig` field,
  e.g. ``policy.model.n_layer=2``), ``action_tokenizer:`` and ``train:`` sections;
- ``out=<dir>`` (default ``<runs_dir>/<dataset>-<policy>-<timestamp>``); a run directory that already
  holds checkpoints is resumed from its latest one; ``resume=<checkpoint or run dir>`` resumes
  from elsewhere;
- ``train.<key>=<value>`` overrides the policy file's ``train:`` settings (any field of
  :class:`vla.train.config.TrainConfig`);
- ``env=<name>``: the env of in-training evaluation every ``train.eval_every`` steps (default: the
  dataset recipe's env; the command hands :func:`vla.evaluation.evaluate_checkpoint` to the loop);
- ``device=auto|cpu|cuda``.

An unknown key, a misspelt config name or a wrong type is refused in one line (exit status 2); so are
a missing, foreign or corrupt store (exit status 1).

``vla train --multirun policy=tiny,small train.lr=1e-3,3e-4`` trains every combination, one after
another (Hydra's basic sweeper), into ``<out>/<job number>`` (default ``<runs_dir>/multirun-<time>``);
every job's config is checked before the first one starts.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m vla.cli train ...``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vla.cli_errors import cli_main
from vla.config import compose_command, split_multirun, sweep
from vla.config_schema import config_group, unset_schema
from vla.train.config import TrainConfig

USAGE = "usage: vla train [--multirun] dataset=<name>|store=<path> policy=<name> [out=<dir>] [resume=<dir>] [train.<key>=<value> ...]"

# The ``train`` section: any TrainConfig field, unset unless the policy file or the command line sets it.
TrainSection = unset_schema(TrainConfig, "TrainSection")


@dataclass
class TrainCommand:
    """``vla train``'s keys."""

    env: Any = config_group()
    dataset: Any = config_group()
    policy: Any = config_group("tiny")
    store: str | None = None  # wins over the dataset config's ``out``
    out: str | None = None
    resume: str | None = None
    device: str = "auto"
    runs_dir: str = "runs"  # where runs without ``out`` go
    train: TrainSection = field(default_factory=TrainSection)  # type: ignore[valid-type]


def train_config(argv: Sequence[str]) -> DictConfig:
    """The checked config of ``vla train <argv>`` (also what tests and scripts train from)."""
    return compose_command("train", argv, TrainCommand)


@cli_main("train")
def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla train``; returns the exit status."""
    args = list(argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        print(__doc__)
        return 0
    multirun, args = split_multirun(args)
    jobs = sweep(args) if multirun else [args]
    configs = [train_config(job) for job in jobs]  # every job checked before the first one trains
    if multirun:
        base = configs[0].out or f"{configs[0].runs_dir}/multirun-{time.strftime('%Y%m%d-%H%M%S')}"
        for number, (job, cfg) in enumerate(zip(jobs, configs, strict=True)):
            cfg.out = str(Path(base) / str(number))
            print(f"job {number}: {' '.join(job)} -> {cfg.out}", flush=True)
    # Progress notes go to stdout: stderr carries the one line of an error.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    # The loop evaluates in simulation through the function it is handed (train.eval_every):
    # the command wires evaluation in, the training package itself never imports it.
    from vla.evaluation import evaluate_checkpoint
    from vla.train.loop import train

    for cfg in configs:
        try:
            result = train(cfg, evaluator=evaluate_checkpoint)
        except KeyboardInterrupt:
            print(
                "vla train: interrupted; rerun the same command to resume from the last checkpoint",
                file=sys.stderr,
            )
            return 130
        print(f"run directory: {result.run_dir} (step {result.step})", flush=True)
    return 0
