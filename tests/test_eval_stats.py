"""Evaluation statistics, report round trips, protocol pieces and CLI parsing (no environments)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla.config import ConfigError
from vla.evaluation import protocol as P
from vla.evaluation.cli import eval_config
from vla.evaluation.report import to_markdown
from vla.evaluation.results import EpisodeResult, EvalReport, summarize
from vla.evaluation.run import stack_history
from vla.evaluation.stats import wilson_interval
from vla.seeds import EVAL_SEED_RANGE, TRAIN_SEED_RANGE, eval_seeds


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    got_low, got_high = wilson_interval(successes, trials)
    assert got_low == pytest.approx(low, abs=5e-4)
    assert got_high == pytest.approx(high, abs=5e-4)


def test_wilson_interval_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for bad in [(-1, 3), (4, 3), (0, -1)]:
        with pytest.raises(ValueError, match="successes"):
            wilson_interval(*bad)
    # More trials at the same rate give a narrower interval around it.
    narrow, wide = wilson_interval(80, 100), wilson_interval(8, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert narrow[0] < 0.8 < narrow[1]


def _episode(
    task: str, seed: int, phrasing: str, success: bool, length: int, outcome: str | None = None
) -> EpisodeResult:
    return EpisodeResult(
        task, seed, phrasing, f"do {task}", success, length, outcome or ("success" if success else "timeout")
    )


def test_summarize_splits_by_task_phrasing_and_difficulty() -> None:
    episodes = [
        _episode("a", 1, "train", True, 10),
        _episode("a", 2, "train", False, 50),
        _episode("a", 1, "heldout", False, 50, "dropped"),
        _episode("a", 2, "heldout", False, 50),
        _episode("b", 3, "train", True, 20),
        _episode("b", 4, "train", True, 30),
        _episode("b", 3, "heldout", True, 20),
        _episode("b", 4, "heldout", False, 50),
    ]
    per_task, overall, per_difficulty = summarize(episodes, {"a": "easy", "b": "hard"}.get)
    rows = {(r.group, r.phrasing): r for r in per_task}
    assert rows["a", "train"].success_rate == 0.5 and rows["a", "train"].mean_length == 30
    assert rows["a", "heldout"].failure_causes == {"dropped": 1, "timeout": 1}
    assert rows["b", "train"].success_rate == 1.0 and rows["b", "train"].difficulty == "hard"
    assert (rows["b", "train"].ci_low, rows["b", "train"].ci_high) == wilson_interval(2, 2)
    by_phrasing = {r.phrasing: r for r in overall}
    assert by_phrasing["train"].successes == 3 and by_phrasing["train"].episodes == 4
    assert by_phrasing["heldout"].mean_task_success == pytest.approx((0.0 + 0.5) / 2)
    assert {(r.group, r.phrasing) for r in per_difficulty} == {
        ("easy", "train"),
        ("hard", "train"),
        ("easy", "heldout"),
        ("hard", "heldout"),
    }


def test_report_json_round_trip_and_markdown() -> None:
    episodes = [_episode("a", 1, "train", True, 10), _episode("a", 1, "heldout", False, 40)]
    per_task, overall, per_difficulty = summarize(episodes)
    report = EvalReport({"policy": "p", "phrasings": ["train", "heldout"]}, episodes, per_task, overall,
                        per_difficulty, {"wall_s": 1.0})  # fmt: skip
    again = EvalReport.from_json(report.to_json())
    assert again == report
    assert again.rate("a", "train") == 1.0 and again.rate(None, "heldout") == 0.0
    assert again.metrics()["success_rate/train"] == 1.0 and again.metrics()["mean_length/heldout"] == 40
    markdown = to_markdown(report)
    assert "success (train phrasings)" in markdown and "success (heldout phrasings)" in markdown
    assert "| a |" in markdown and "timeout: 1" in markdown
    broken = json.loads(report.to_json())
    del broken["episodes"]
    with pytest.raises(ValueError, match="episodes"):
        EvalReport.from_json(json.dumps(broken))


def test_markdown_lists_the_instructions_the_policy_read_otherwise() -> None:
    episodes = [_episode("a", 1, "heldout", True, 10), _episode("a", 2, "heldout", False, 40),
                _episode("b", 1, "heldout", True, 10)]  # fmt: skip
    per_task, overall, per_difficulty = summarize(episodes)
    read = {"do a": "touch a", "do b": "do b"}  # "do b" read word for word: not listed
    report = EvalReport({"policy": "p"}, episodes, per_task, overall, per_difficulty, {},
                        {"instructions_read": read})  # fmt: skip
    markdown = to_markdown(report)
    assert "| do a | touch a | 1/2 |" in markdown and "| do b |" not in markdown.split("Instructions read")[1]
    assert EvalReport.from_json(report.to_json()).diagnostics == {"instructions_read": read}
    assert "Instructions read" not in to_markdown(EvalReport({"policy": "p"}, episodes, per_task, overall,
                                                              per_difficulty, {}))  # fmt: skip


def test_seed_plan_uses_eval_seeds_stable_across_task_selections() -> None:
    all_tasks = ["a", "b", "c"]
    seeds = P.seeds_per_task(["c", "a"], 3, all_tasks)
    assert seeds == {"c": eval_seeds(3, task_index=2), "a": eval_seeds(3, task_index=0)}
    assert P.seeds_per_task(["c"], 3, all_tasks)["c"] == seeds["c"]  # same seeds when evaluated alone
    flat = [s for v in seeds.values() for s in v]
    assert all(s in EVAL_SEED_RANGE and s not in TRAIN_SEED_RANGE for s in flat)
    plan = P.episode_plan(seeds, P.phrasings_of("both"))
    assert len(plan) == 12
    assert {(r.seed, r.phrasing) for r in plan if r.task == "a"} == {
        (s, p) for s in seeds["a"] for p in ("train", "heldout")
    }
    with pytest.raises(ValueError, match="phrasing"):
        P.phrasings_of("paraphrased")


def test_checkpoint_hash_covers_weights_and_config_only(tmp_path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "optimizer.pt").write_bytes(b"adam")
    (tmp_path / "notes.txt").write_text("hi")
    first = P.checkpoint_hash(tmp_path)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    (tmp_path / "optimizer.pt").write_bytes(b"adam state changed")
    (tmp_path / "notes.txt").write_text("changed")
    assert P.checkpoint_hash(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert P.checkpoint_hash(tmp_path) != first
    with pytest.raises(FileNotFoundError):
        P.checkpoint_hash(tmp_path / "missing")


def test_stack_history_batches_time_and_keeps_instructions() -> None:
    frame = lambda v, text: {"observation.state": np.full(3, v, np.float32),  # noqa: E731
                             "observation.images.front": np.full((4, 4, 3), v, np.uint8), "instruction": text}  # fmt: skip
    batch = stack_history([[frame(0, "x"), frame(1, "x")], [frame(5, "y"), frame(5, "y")]])
    assert batch["observation.state"].shape == (2, 2, 3)
    assert batch["observation.images.front"].shape == (2, 2, 4, 4, 3)
    assert batch["observation.state"][0, :, 0].tolist() == [0, 1]
    assert batch["instruction"] == ["x", "y"]


def test_cli_arguments_are_checked() -> None:
    cfg = eval_config(["policy=scripted", "env=tabletop", "env.tasks=[a]", "temporal_ensemble=0.1",
                       "replan_every=4", "episodes_per_task=3"])  # fmt: skip
    assert cfg.policy == "scripted" and cfg.temporal_ensemble == 0.1
    assert cfg.replan_every == 4 and cfg.episodes_per_task == 3 and cfg.num_envs == 2  # a default
    assert cfg.env.tasks == ["a"] and cfg.env.suite == "tabletop" and cfg.env.name == "tabletop"
    for argv, message in [
        (["env=tabletop"], "checkpoint"),
        (["policy=scripted"], "env="),
        (["policy=scripted", "env=tabletop", "episodes=3"], "unknown key 'episodes'"),
        (["policy=scripted", "env=tabletop", "num_envs=two"], "num_envs"),
        (["policy=scripted", "env=tabletop", "num_envs=0"], "num_envs=0: must be >= 1"),
        (["policy=magic", "env=tabletop"], "choose one of checkpoint, scripted, lerobot"),
        (["policy=scripted", "env=tabletop", "phrasing=xyz"], "phrasing='xyz': choose one of train"),
    ]:
        with pytest.raises(ConfigError, match=message):
            eval_config(argv)
