"""What an evaluation produces: per-episode outcomes, their summaries, and the report that holds both.

Summaries are always recomputed from the episode list (:func:`summarize`), so a report can never
claim a rate its episodes do not support.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vla.evaluation.stats import wilson_interval

SUCCESS = "success"
TIMEOUT = "timeout"
INVALID_ACTION = "invalid_action"
POLICY_ERROR = "policy_error"
ENV_ERROR = "env_error"
TERMINATED = "terminated"  # the env ended the episode without success and gave no reason


@dataclass
class EpisodeResult:
    """One rollout: which task, seed and phrasing; how it ended."""

    task: str
    seed: int
    phrasing: str
    instruction: str
    success: bool
    length: int  # control steps executed
    outcome: str  # SUCCESS or a failure cause (TIMEOUT, INVALID_ACTION, an env-reported reason, ...)
    detail: str = ""  # the error message or the env's own words, when there are any
    video: str | None = None  # file name inside the output folder


@dataclass
class RateSummary:
    """Success statistics of a group of episodes (one task, one difficulty split, or everything)."""

    group: str
    phrasing: str
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_length: float
    failure_causes: dict[str, int]
    mean_task_success: float | None = None  # groups of several tasks: the unweighted mean over tasks
    difficulty: str | None = None


@dataclass
class EvalReport:
    """Everything one evaluation measured, plus the protocol needed to reproduce it."""

    protocol: dict[str, Any]
    episodes: list[EpisodeResult]
    per_task: list[RateSummary] = field(default_factory=list)
    overall: list[RateSummary] = field(default_factory=list)
    per_difficulty: list[RateSummary] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # e.g. the policy's decode_errors count

    def rate(self, task: str | None = None, phrasing: str = "train") -> float:
        """Success rate of ``task`` (or of all episodes when None) under ``phrasing``."""
        rows = self.overall if task is None else [r for r in self.per_task if r.group == task]
        for row in rows:
            if row.phrasing == phrasing:
                return row.success_rate
        raise KeyError(f"no result for task={task!r}, phrasing={phrasing!r}")

    def metrics(self) -> dict[str, float]:
        """Flat scalars for training logs: ``success_rate/<phrasing>``, ``ci_low/...``, ``mean_length/...``."""
        flat: dict[str, float] = {}
        for row in self.overall:
            flat[f"success_rate/{row.phrasing}"] = row.success_rate
            flat[f"ci_low/{row.phrasing}"] = row.ci_low
            flat[f"ci_high/{row.phrasing}"] = row.ci_high
            flat[f"mean_length/{row.phrasing}"] = row.mean_length
        return flat

    def to_json(self) -> str:
        """The report as JSON text (the content of ``report.json``)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> EvalReport:
        """Read a report written by :meth:`to_json`; raises ValueError naming a missing field."""
        data = json.loads(text)
        try:
            return cls(
                protocol=data["protocol"],
                episodes=[EpisodeResult(**e) for e in data["episodes"]],
                per_task=[RateSummary(**r) for r in data["per_task"]],
                overall=[RateSummary(**r) for r in data["overall"]],
                per_difficulty=[RateSummary(**r) for r in data["per_difficulty"]],
                timing=data["timing"],
                diagnostics=data.get("diagnostics", {}),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a vla evaluation report: {exc}") from exc


def summarize_group(
    group: str, phrasing: str, episodes: Sequence[EpisodeResult], difficulty: str | None = None
) -> RateSummary:
    """Success rate, Wilson 95% interval, mean length and failure causes of ``episodes``."""
    successes = sum(e.success for e in episodes)
    low, high = wilson_interval(successes, len(episodes))
    by_task: dict[str, list[bool]] = {}
    for e in episodes:
        by_task.setdefault(e.task, []).append(e.success)
    return RateSummary(
        group=group,
        phrasing=phrasing,
        episodes=len(episodes),
        successes=successes,
        success_rate=successes / len(episodes) if episodes else 0.0,
        ci_low=low,
        ci_high=high,
        mean_length=sum(e.length for e in episodes) / len(episodes) if episodes else 0.0,
        failure_causes=dict(Counter(e.outcome for e in episodes if not e.success)),
        mean_task_success=(sum(sum(v) / len(v) for v in by_task.values()) / len(by_task))
        if by_task
        else None,
        difficulty=difficulty,
    )


def summarize(
    episodes: Iterable[EpisodeResult], difficulty: Callable[[str], str | None] | None = None
) -> tuple[list[RateSummary], list[RateSummary], list[RateSummary]]:
    """``(per_task, overall, per_difficulty)`` summaries, each split by phrasing."""
    episodes = list(episodes)
    tasks = list(dict.fromkeys(e.task for e in episodes))
    phrasings = list(dict.fromkeys(e.phrasing for e in episodes))
    level = {t: (difficulty(t) if difficulty else None) for t in tasks}
    per_task, overall, per_difficulty = [], [], []
    for phrasing in phrasings:
        of_phrasing = [e for e in episodes if e.phrasing == phrasing]
        for task in tasks:
            rows = [e for e in of_phrasing if e.task == task]
            per_task.append(summarize_group(task, phrasing, rows, level[task]))
        overall.append(summarize_group("all", phrasing, of_phrasing))
        for split in dict.fromkeys(v for v in level.values() if v is not None):
            rows = [e for e in of_phrasing if level[e.task] == split]
            per_difficulty.append(summarize_group(split, phrasing, rows, split))
    return per_task, overall, per_difficulty
