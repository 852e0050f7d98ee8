"""``vla eval`` on the real tabletop suite: the scripted expert succeeds, a zero policy fails.

Runs through the command line (``vla.evaluation.cli.main``) with an env config written to a
temporary config root, so argument parsing, config composition and every output file are covered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vla.envs import registry
from vla.evaluation import evaluate, load_report
from vla.evaluation.cli import main
from vla.seeds import TRAIN_SEED_RANGE, eval_seeds

ENV_YAML = "suite: tabletop\ntasks: demo\nimage_size: 64\n"
TASKS = ["reach-red", "press-blue"]


@pytest.fixture
def config_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "configs"
    for group in ("envs", "datasets", "policies"):
        (root / group).mkdir(parents=True)
    (root / "envs" / "tt_eval.yaml").write_text(ENV_YAML)
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(root))
    return root


def test_cli_scripted_expert_on_tabletop(
    config_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    argv = ["policy=scripted", "env=tt_eval", f"env.tasks=[{','.join(TASKS)}]", "episodes_per_task=2",
            "num_envs=2", "videos=2", f"out={out}", "progress=false"]  # fmt: skip
    assert main(argv) == 0
    assert "report:" in capsys.readouterr().out
    report = load_report(out)
    data = json.loads((out / "report.json").read_text())
    assert data["protocol"]["argv"] == ["vla", "eval", *argv]
    assert data["protocol"]["env"]["image_size"] == 64 and data["protocol"]["tasks"] == TASKS
    assert "env.tasks=[reach-red,press-blue]" in data["protocol"]["command"]
    all_tasks = registry.task_names({"suite": "tabletop", "tasks": None})
    for task in TASKS:
        seeds = report.protocol["seeds"][task]
        assert seeds == eval_seeds(2, task_index=all_tasks.index(task))
        assert not set(seeds) & set(TRAIN_SEED_RANGE)
    assert len(report.episodes) == len(TASKS) * 2 * 2
    for phrasing in ("train", "heldout"):
        assert report.rate(None, phrasing) >= 0.75, [(e.task, e.outcome) for e in report.episodes]
    assert (out / "report.md").is_file() and (out / "success.png").is_file()

    import imageio.v3 as iio

    videos = sorted((out / "videos").glob("*.mp4"))
    assert videos, "no video written"
    frames = iio.imread(videos[0])
    assert frames.ndim == 4 and frames.shape[1:3] == (64, 64) and len(frames) > 1


class ZeroPolicy:
    """Always commands zero: the arm never moves, so no task should ever succeed."""

    def __init__(self, action_dim: int) -> None:
        self.spec = type("Spec", (), {"n_obs_steps": 2, "chunk_size": 4})()
        self.action_dim = action_dim

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        return np.zeros((len(batch["instruction"]), 4, self.action_dim), np.float32)


def test_zero_policy_fails_on_tabletop() -> None:
    env_cfg = {"name": "tt", "suite": "tabletop", "image_size": 32, "max_steps": 20}
    env = registry.make_env(env_cfg, "reach-red")
    action_dim = env.action_space.shape[0]
    env.close()
    report = evaluate(ZeroPolicy(action_dim), env_cfg, tasks=["reach-red"], episodes_per_task=2,
                      phrasings="train", num_envs=2, video_count=0, progress=False)  # fmt: skip
    assert report.rate(None, "train") == 0.0
    assert {e.outcome for e in report.episodes} == {"timeout"} and {e.length for e in report.episodes} == {20}
