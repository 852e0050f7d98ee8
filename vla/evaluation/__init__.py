"""Closed-loop evaluation in simulation (``vla eval``).

- :func:`evaluate` / :func:`evaluate_checkpoint` roll a policy out over the published eval seeds,
  under training and held-out phrasings, in parallel env workers, and return an :class:`EvalReport`;
- :func:`wilson_interval` gives the 95% interval every reported success rate carries;
- :class:`ScriptedPolicy` replays the suite's scripted expert through the Policy protocol;
- :data:`POLICY_LOADERS` maps ``policy=<kind>`` to a loader (checkpoint, scripted, lerobot).
"""

from __future__ import annotations

from vla.evaluation.api import evaluate, evaluate_checkpoint
from vla.evaluation.loaders import POLICY_LOADERS, load_eval_policy
from vla.evaluation.report import load_report
from vla.evaluation.results import EpisodeResult, EvalReport, RateSummary
from vla.evaluation.scripted import ScriptedPolicy
from vla.evaluation.stats import wilson_interval

__all__ = [
    "POLICY_LOADERS",
    "EpisodeResult",
    "EvalReport",
    "RateSummary",
    "ScriptedPolicy",
    "evaluate",
    "evaluate_checkpoint",
    "load_eval_policy",
    "load_report",
    "wilson_interval",
]
