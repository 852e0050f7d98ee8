"""Optional work done during training: logging sinks and the simulation-evaluation hook."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class MetricsLog:
    """TensorBoard scalars plus a ``metrics.jsonl`` file (one JSON object per logged step).

    Only the main process creates one; the JSON lines make runs easy to compare from scripts/tests.
    """

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))
        self.jsonl = (run_dir / "metrics.jsonl").open("a")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()


# ``evaluator(checkpoint, env_config, episodes_per_task=, out_dir=, progress=)`` -> a report with
# ``overall`` rows (``phrasing``, ``success_rate``): vla.evaluation.evaluate_checkpoint, which the
# `vla train` command hands to the loop (training itself never imports the evaluation package).
Evaluator = Callable[..., Any]


def evaluate_in_simulation(
    evaluator: Evaluator, checkpoint: Path, env_cfg: Any, episodes: int, out_dir: Path
) -> dict[str, float]:
    """Roll the checkpoint out in the run's env; return ``eval/success_<phrasing>`` scalars.

    Evaluation is another part of the stack: a failure is logged and training goes on.
    """
    if env_cfg is None:
        log.warning(
            "train.eval_every is set but the run has no env config (dataset=<name> names one); skipping"
        )
        return {}
    env = OmegaConf.to_container(env_cfg, resolve=True) if OmegaConf.is_config(env_cfg) else env_cfg
    try:
        report = evaluator(
            checkpoint, env, episodes_per_task=episodes, out_dir=out_dir / checkpoint.name, progress=False
        )
        return {f"eval/success_{row.phrasing}": float(row.success_rate) for row in report.overall}
    except Exception as exc:  # noqa: BLE001 - evaluation must never kill a training run
        log.warning("simulation evaluation of %s failed: %r", checkpoint, exc)
        return {}
