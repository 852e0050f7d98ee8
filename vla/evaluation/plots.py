"""The success bar chart: one group of bars per task, train vs held-out phrasings side by side."""

from __future__ import annotations

from pathlib import Path

from vla.evaluation.results import EvalReport

_COLORS = {"train": "#4C72B0", "heldout": "#DD8452"}


def plot_success(report: EvalReport, path: str | Path) -> Path:
    """Write a PNG of per-task success rates with Wilson 95% error bars (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.group for r in report.per_task))
    phrasings = list(dict.fromkeys(r.phrasing for r in report.per_task))
    width = 0.8 / max(1, len(phrasings))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.7 * len(tasks) * max(1, len(phrasings))), 3.6))
    for k, phrasing in enumerate(phrasings):
        rows = {r.group: r for r in report.per_task if r.phrasing == phrasing}
        xs = [i + (k - (len(phrasings) - 1) / 2) * width for i in range(len(tasks))]
        rates = [rows[t].success_rate if t in rows else 0.0 for t in tasks]
        # max(0, .): a rate of 0 or 1 sits on its interval's end, up to rounding.
        low = [max(0.0, rows[t].success_rate - rows[t].ci_low) if t in rows else 0.0 for t in tasks]
        high = [max(0.0, rows[t].ci_high - rows[t].success_rate) if t in rows else 0.0 for t in tasks]
        ax.bar(
            xs,
            rates,
            width,
            yerr=[low, high],
            capsize=3,
            label=f"{phrasing} phrasings",
            color=_COLORS.get(phrasing),
        )
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(
        tasks, rotation=30 if len(tasks) > 3 else 0, ha="right" if len(tasks) > 3 else "center"
    )
    ax.set_ylim(0.0, 1.25)  # headroom for the legend above the 100% bars
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("success rate (Wilson 95% CI)")
    episodes = report.protocol.get("episodes_per_task")
    ax.set_title(f"{report.protocol.get('policy', 'policy')}: {episodes} episodes per task and phrasing")
    ax.legend(loc="upper center", ncol=max(1, len(phrasings)), fontsize="small", frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
