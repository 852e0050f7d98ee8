"""Writing a report: ``report.json`` (everything, machine-readable) and ``report.md`` (tables)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vla.evaluation.results import EvalReport, RateSummary


def write_json(report: EvalReport, path: str | Path) -> Path:
    """``report.to_json()`` into ``path``."""
    path = Path(path)
    path.write_text(report.to_json() + "\n")
    return path


def load_report(path: str | Path) -> EvalReport:
    """Read a ``report.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    return EvalReport.from_json(path.read_text())


def _rate(row: RateSummary | None) -> str:
    if row is None:
        return "-"
    return f"{100 * row.success_rate:.1f}% [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}] ({row.successes}/{row.episodes})"


def _causes(rows: Sequence[RateSummary]) -> str:
    merged: dict[str, int] = {}
    for row in rows:
        for cause, count in row.failure_causes.items():
            merged[cause] = merged.get(cause, 0) + count
    return ", ".join(f"{cause}: {n}" for cause, n in sorted(merged.items(), key=lambda kv: -kv[1])) or "-"


def _table(rows: Sequence[RateSummary], first_column: str, with_difficulty: bool) -> list[str]:
    """One line per group; one success column per phrasing, side by side."""
    phrasings = list(dict.fromkeys(r.phrasing for r in rows))
    groups = list(dict.fromkeys(r.group for r in rows))
    header = [first_column] + (["difficulty"] if with_difficulty else [])
    header += [f"success ({p} phrasings)" for p in phrasings] + ["mean length", "failure causes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        of_group = [r for r in rows if r.group == group]
        by_phrasing = {r.phrasing: r for r in of_group}
        cells = [group] + ([of_group[0].difficulty or "-"] if with_difficulty else [])
        cells += [_rate(by_phrasing.get(p)) for p in phrasings]
        total = sum(r.episodes for r in of_group)
        mean_length = sum(r.mean_length * r.episodes for r in of_group) / total if total else 0.0
        cells += [f"{mean_length:.1f}", _causes(of_group)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: EvalReport) -> str:
    """The human-readable report: protocol, overall, per difficulty, per task, timing."""
    p = report.protocol
    lines = [f"# Evaluation: {p.get('policy')} on {p.get('env', {}).get('name', p.get('suite'))}", ""]
    checkpoint = f"`{p['checkpoint']}` ({p.get('checkpoint_hash')})" if p.get("checkpoint") else "none"
    lines += [
        f"- checkpoint: {checkpoint}",
        f"- episodes per task and phrasing: {p.get('episodes_per_task')}; phrasings: {', '.join(p.get('phrasings', []))}",
        f"- execution: replan every {p.get('replan_every')} steps; temporal ensembling: {p.get('temporal_ensemble')}"
        + (f"; on {p.get('device')} at {p['precision']}" if p.get("precision") else ""),
        f"- simulator: {p.get('backend', 'classic')} backend on {p.get('sim_device', 'cpu')}",
        f"- seeds: `vla.seeds.eval_seeds` (disjoint from training seeds), first task's: {_first_seeds(p)}",
        f"- vla {p.get('vla_version')}, code {p.get('code', 'not recorded')}, {p.get('created')}",
        f"- reproduce: `{p.get('command')}`",
        "",
        "Success rates are with Wilson 95% intervals; 'overall' pools all episodes "
        "(the unweighted mean over tasks is in report.json as mean_task_success).",
        "",
        "## Overall",
        "",
        *_table(report.overall, "episodes", with_difficulty=False),
        "",
    ]
    if report.per_difficulty:
        lines += [
            "## Per difficulty",
            "",
            *_table(report.per_difficulty, "difficulty", with_difficulty=False),
            "",
        ]
    has_difficulty = any(r.difficulty for r in report.per_task)
    lines += ["## Per task", "", *_table(report.per_task, "task", with_difficulty=has_difficulty), ""]
    t = report.timing
    if t:
        lines += [
            "## Timing",
            "",
            f"{t.get('episodes', 0):.0f} episodes, {t.get('env_steps', 0):.0f} env steps in {t.get('rollout_s', 0):.1f} s "
            f"of rollouts ({t.get('env_steps_per_s', 0):.1f} env steps/s, policy included, with {p.get('num_envs')} "
            f"env workers) after {t.get('startup_s', 0):.1f} s of start-up; {t.get('wall_s', 0):.1f} s in all.",
            "",
        ]
    lines += _instructions_read(report)
    videos = [e.video for e in report.episodes if e.video]
    if videos:
        lines += ["## Videos", "", *[f"- [{Path(v).name}]({v})" for v in videos], ""]
    return "\n".join(lines)


def _instructions_read(report: EvalReport) -> list[str]:
    """The instructions the policy did not read word for word: what it read, and how they did."""
    from vla.model.text_tokenizer import split_words

    read = report.diagnostics.get("instructions_read") or {}
    changed = {text: as_read for text, as_read in read.items() if as_read != " ".join(split_words(text))}
    if not changed:
        return []
    lines = ["## Instructions read otherwise", "",
             "Unknown words are hidden, or the instruction is read as the one training instruction its "
             "known words fit (`vla.model.instruction_grounding`).", "",
             "| instruction | the policy read | success |", "|---|---|---|"]  # fmt: skip
    for text, as_read in sorted(changed.items()):
        outcomes = [e.success for e in report.episodes if e.instruction == text]
        lines.append(f"| {text} | {as_read or '(nothing)'} | {sum(outcomes)}/{len(outcomes)} |")
    return [*lines, ""]


def _first_seeds(protocol: dict) -> str:
    seeds = protocol.get("seeds", {})
    if not seeds:
        return "-"
    first = next(iter(seeds.values()))
    return f"{first[0]}..{first[-1]}" if first else "-"


def write_markdown(report: EvalReport, path: str | Path) -> Path:
    """``to_markdown(report)`` into ``path``."""
    path = Path(path)
    path.write_text(to_markdown(report))
    return path
