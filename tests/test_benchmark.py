"""`vla benchmark` on a tiny budget: it runs, writes its results table, resumes, and refuses bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vla.benchmark import BenchmarkCommand, overrides_of, plan
from vla.benchmark import main as benchmark_main
from vla.code_version import code_version
from vla.data import TrajectoryStore

pytestmark = pytest.mark.slow

# Two tasks, two episodes each, 20 steps, one evaluation seed per task and phrasing set.
TINY = ["suite=tabletop", "quick=true", "record.tasks=[reach-red,press-blue]", "record.workers=0",
        "train.num_workers=0", "eval.num_envs=1", "eval.videos=0"]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert benchmark_main([*TINY, f"out={out}"]) == 0
    return out


def test_results_table_and_json(first_run):
    results = json.loads((first_run / "results.json").read_text())
    assert {row["phrasing"] for row in results["overall"]} == {"train", "heldout"}
    tasks = {row["group"] for row in results["per_task"]}
    assert tasks == {"reach-red", "press-blue"}
    for row in results["per_task"]:
        assert row["episodes"] == 1 and 0.0 <= row["ci_low"] <= row["success_rate"] <= row["ci_high"] <= 1.0
    assert set(results["seconds"]) == {"record", "train", "eval"} and all(results["seconds"].values())
    assert results["commands"]["train"].startswith("vla train store=")
    # Each step records the code it ran on; this checkout's, since nothing changed during the run.
    assert results["code"] == {step: [code_version()] for step in ("record", "train", "eval")}
    table = (first_run / "results.md").read_text()
    assert "| reach-red |" in table and "| press-blue |" in table and "record + train" in table
    report = json.loads((first_run / "eval" / "report.json").read_text())
    with TrajectoryStore.open(first_run / "data.zarr") as store:
        recorded = store.schema.features["observation.images.front"].shape[0]
    assert recorded == 128  # the suite's record.image_size
    assert report["protocol"]["env"]["image_size"] == recorded  # evaluated on the env the data came from
    assert all(e["seed"] >= 1_000_000 for e in report["episodes"])  # evaluation seeds only


def test_rerun_resumes_without_redoing_work(first_run, capsys):
    with TrajectoryStore.open(first_run / "data.zarr") as store:
        episodes = store.num_episodes
    report_time = os.stat(first_run / "eval" / "report.json").st_mtime
    state = json.loads((first_run / "benchmark.json").read_text())
    capsys.readouterr()
    assert benchmark_main([*TINY, f"out={first_run}"]) == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed  # the evaluation of the same checkpoint is not run again
    assert f"store:      {first_run / 'data.zarr'}\ncheckpoint: {first_run / 'train'}\n" in printed
    with TrajectoryStore.open(first_run / "data.zarr") as store:
        assert store.num_episodes == episodes  # nothing recorded twice
    assert os.stat(first_run / "eval" / "report.json").st_mtime == report_time  # the evaluation was reused
    # Steps that did no work keep the times of the runs that did.
    assert json.loads((first_run / "benchmark.json").read_text()) == state


def test_more_steps_resume_training_and_redo_the_evaluation(first_run):
    assert benchmark_main([*TINY, f"out={first_run}", "train.steps=30"]) == 0
    state = json.loads((first_run / "benchmark.json").read_text())
    assert len(state["steps"]["train"]["runs"]) == 2  # the first 20 steps, then 10 more
    report = json.loads((first_run / "eval" / "report.json").read_text())
    assert report["protocol"]["checkpoint_resolved"].endswith("step_00000030")


def test_plan_merges_quick_suite_and_command_line(tmp_path):
    suite = {"name": "s", "dataset": "tabletop", "policy": "tiny", "record": {"image_size": 64},
             "eval": {"episodes_per_task": 50, "phrasing": "train", "flow_noise_scale": 0.5,
                      "flow_steps": 4}}  # fmt: skip
    p = plan(suite, tmp_path, {"eval": {"episodes_per_task": 3}, "train": {"lr": 0.01}}, quick=True)
    assert "episodes_per_task=3" in p.eval_args and "phrasing=train" in p.eval_args
    assert "flow_noise_scale=0.5" in p.eval_args  # the sampler settings of a suite reach vla eval
    assert "flow_steps=4" in p.eval_args
    assert "env.image_size=64" in p.eval_args and "env=tabletop" in p.eval_args
    assert "train.lr=0.01" in p.train_args and "train.steps=20" in p.train_args  # quick's, not overridden
    assert "episodes_per_task=2" in p.record_args


def test_a_mapping_setting_reaches_the_train_command_intact(tmp_path):
    """Hydra's override grammar takes no quoted dict keys: a suite's ``task_weights`` must still
    compose into ``vla train``'s config with its fnmatch patterns as they were written."""
    from vla.config import compose_command
    from vla.train.cli import TrainCommand

    suite = {"name": "s", "dataset": "tabletop", "policy": "tiny",
             "train": {"order": "tasks", "task_weights": {"*press-*": 2.0, "*pick-red": 0.5}}}  # fmt: skip
    p = plan(suite, tmp_path, {}, quick=False)
    train = compose_command("train", p.train_args, TrainCommand)
    assert dict(train.train.task_weights) == {"*press-*": 2.0, "*pick-red": 0.5}


def test_per_task_quotas_reach_vla_record_but_not_the_quick_run(tmp_path):
    """A suite's ``record.task_episodes`` composes into ``vla record``'s quotas; ``quick=true``
    records two episodes of every task, the named ones included."""
    from vla.config import compose_command
    from vla.envs.record import RecordCommand, settings_from_config

    suite = {"name": "s", "dataset": "metaworld_mt10", "policy": "tiny",
             "record": {"episodes_per_task": 5, "task_episodes": {"reach-v3": 7}, "tasks": ["reach-v3", "push-v3"]}}  # fmt: skip
    full = plan(suite, tmp_path, {}, quick=False)
    _, settings = settings_from_config(compose_command("record", full.record_args, RecordCommand))
    assert settings.episodes_per_task == {"reach-v3": 7, "push-v3": 5}
    quick = plan(suite, tmp_path, {}, quick=True)
    _, settings = settings_from_config(compose_command("record", quick.record_args, RecordCommand))
    assert settings.episodes_per_task == {"reach-v3": 2, "push-v3": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["suite=nosuch"], "no suite config named 'nosuch'"),
        (["suite=tabletop", "eval.episodes=3"], "unknown key 'eval.episodes'"),
        (["suite=tabletop", "train.stepz=3"], "unknown key 'train.stepz'"),
        (["suite=tabletop", "eval.flow_noise_scale=-1"], "flow_noise_scale=-1.0: must be >= 0"),
        (["suite=tabletop", "eval.flow_noise=same"], "choose one of fresh, fixed"),
        ([], "name a suite"),
    ],
)
def test_bad_arguments_are_one_line(args, message, capsys):
    from vla.cli import main

    assert main(["benchmark", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    "suite", sorted(p.stem for p in (Path(__file__).parents[1] / "benchmarks").glob("*.yaml"))
)
def test_every_shipped_suite_plans_three_commands_that_compose(suite, tmp_path):
    """A suite file whose record, train or eval section its command would refuse fails here, not an
    hour into a benchmark run."""
    from vla.config import compose_command
    from vla.envs.record import RecordCommand
    from vla.evaluation.cli import EvalCommand
    from vla.train.cli import TrainCommand

    cfg = compose_command("benchmark", [f"suite={suite}"], BenchmarkCommand)
    steps = plan(dict(cfg.suite), tmp_path, overrides_of(cfg), quick=False)
    record = compose_command("record", steps.record_args, RecordCommand)
    evaluation = compose_command("eval", steps.eval_args, EvalCommand)
    assert record.env.name == evaluation.env.name  # evaluated in the env the data come from
    assert record.get("image_size", record.env.image_size) == evaluation.env.image_size
    train = compose_command("train", steps.train_args, TrainCommand)
    assert train.train.steps == cfg.suite.train.steps
    assert evaluation.episodes_per_task == cfg.suite.eval.episodes_per_task
