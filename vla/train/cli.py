"""``vla train dataset=<name> policy=<name> [key=value ...]``.

Arguments are composed with :func:`vla.config.compose` (Hydra override grammar):

- ``dataset=<name>`` (its config's ``out:`` is the store) or ``store=<path>``;
- ``policy=<name>``: ``model:``, ``action_tokenizer:`` and ``train:`` sections;
- ``out=<dir>`` (default ``runs/<dataset>-<policy>-<timestamp>``); a run directory that already
  holds checkpoints is resumed from its latest one; ``resume=<checkpoint or run dir>`` resumes
  from elsewhere;
- ``train.<key>=<value>`` overrides the policy's train settings (see :class:`TrainConfig`);
- ``device=auto|cpu|cuda``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m vla.cli train ...``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from vla.config import ConfigError, compose

USAGE = "usage: vla train dataset=<name>|store=<path> policy=<name> [out=<dir>] [resume=<dir>] [train.<key>=<value> ...]"


def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla train``; returns the exit status."""
    args = list(argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = compose(args, defaults={"policy": "tiny"})
    except ConfigError as exc:
        print(f"vla train: {exc}", file=sys.stderr)
        return 2
    from vla.train.loop import train

    try:
        result = train(cfg)
    except KeyboardInterrupt:
        print(
            "vla train: interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"vla train: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"run directory: {result.run_dir} (step {result.step})")
    return 0
