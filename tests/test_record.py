"""`vla record`: expert episodes into a store, seeds, resuming, keep_failed, workers, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vla.data import FeatureSpec, Schema, TrajectoryStore
from vla.envs import record_rollout
from vla.envs.record import RecordSettings, main, record
from vla.envs.record_rollout import EpisodeRecording, record_episode
from vla.evaluation.api import plain_env_config
from vla.features import ACTION_KEY, STATE_KEY, camera_key
from vla.seeds import EVAL_SEED_RANGE

pytest.importorskip("metaworld", reason="these recordings use the Meta-World adapter")

TWO_TASKS = "tasks=[reach-v3,button-press-topdown-v3]"
FAST = ["image_size=24", "progress=false"]


def _episodes(path: Path) -> list[tuple[str, int, bool]]:
    store = TrajectoryStore.open(path)
    return [(m.extra["task"], m.seed, m.success) for m in store.episodes_meta()]


def seed(suite: str, task: str, i: int) -> int:
    """Training seed ``i`` of ``task``: each task has its own block (vla.seeds)."""
    from vla.envs import registry
    from vla.seeds import first_train_seed, task_numbers

    number = task_numbers([task], registry.suite_module(suite).task_names(None))[task]
    return first_train_seed(number) + i


def test_records_round_robin_with_training_seeds_then_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "mt.zarr"
    # The recipe's settings (noise 0.1, env metaworld_mt10); episodes=3 replaces its episodes_per_task.
    assert main(["dataset=metaworld_mt10", TWO_TASKS, "episodes=3", f"out={out}", "workers=0", *FAST]) == 0
    store = TrajectoryStore.open(out)
    assert store.num_episodes == 3
    cameras = {camera_key("front"), camera_key("wrist"), camera_key("side")}  # envs/metaworld_mt10.yaml
    assert set(store.schema.features) == {*cameras, STATE_KEY, ACTION_KEY}
    assert store.schema.features[camera_key("front")].shape == (24, 24, 3)
    assert store.schema.features[ACTION_KEY].names == ("delta_x", "delta_y", "delta_z", "gripper")
    assert store.schema.features[STATE_KEY].kind == "state" and store.robot_type == "sawyer"
    first = _episodes(out)
    # 3 episodes over 2 tasks, round-robin: 2 for the first task, 1 for the second, each task's
    # first training seeds (a block per task, so no two tasks share a layout).
    assert sorted(first) == [
        ("button-press-topdown-v3", seed("metaworld", "button-press-topdown-v3", 0), True),
        ("reach-v3", seed("metaworld", "reach-v3", 0), True),
        ("reach-v3", seed("metaworld", "reach-v3", 1), True),
    ]
    assert len({s for _, s, _ in first}) == 3
    meta = store.episode_meta(0)
    assert meta.env_id == "metaworld_mt10" and meta.extra["phrasing"] == "train"
    assert meta.extra["expert_noise"] == 0.1
    assert all(s not in EVAL_SEED_RANGE for _, s, _ in first)
    episode = store.read_episode(0)
    assert len(episode[ACTION_KEY]) == meta.length > 1
    assert np.abs(episode[ACTION_KEY]).max() <= 1.0

    # Rerunning with a larger N records only the missing (task, seed) pairs and keeps the rest.
    # The same env as the recipe's (its three cameras): a store refuses an env that renders others.
    env_cfg = {
        **plain_env_config("metaworld_mt10"),
        "tasks": ["reach-v3", "button-press-topdown-v3"],
        "image_size": 24,
    }
    settings = RecordSettings(out=out, episodes_per_task={"reach-v3": 3, "button-press-topdown-v3": 2},
                              workers=0, progress=False)  # fmt: skip
    # An interrupted run keeps every episode committed before the interruption...
    calls = {"n": 0}

    def interrupted_on_second_episode(*args: object) -> EpisodeRecording:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return record_episode(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(record_rollout, "record_episode", interrupted_on_second_episode)
    with pytest.raises(KeyboardInterrupt):
        record(env_cfg, settings)
    assert len(_episodes(out)) == 4
    monkeypatch.undo()
    # ... and the rerun records only what is still missing.
    summary = record(env_cfg, settings)
    assert (summary.already, summary.committed) == (4, 1)
    after = _episodes(out)
    assert after[:3] == first
    assert sorted(after[3:]) == [
        ("button-press-topdown-v3", seed("metaworld", "button-press-topdown-v3", 1), True),
        ("reach-v3", seed("metaworld", "reach-v3", 2), True),
    ]
    complete = record(env_cfg, settings)
    assert complete.attempts == 0  # nothing missing: nothing recorded
    assert complete.line() == "recorded nothing: the 5 episodes asked for were already stored"


def test_keep_failed_keeps_or_drops_failed_episodes(tmp_path: Path) -> None:
    # Three steps are too few for the expert to succeed: every episode fails.
    short = ["env=metaworld_mt10", "tasks=[reach-v3]", "env.max_episode_steps=3", "workers=0", *FAST]
    kept = tmp_path / "kept.zarr"
    assert main([*short, "episodes=2", "keep_failed=true", f"out={kept}"]) == 0
    assert _episodes(kept) == [("reach-v3", seed("metaworld", "reach-v3", i), False) for i in (0, 1)]
    assert TrajectoryStore.open(kept).episode_meta(0).length == 3

    dropped = tmp_path / "dropped.zarr"
    assert main([*short, "episodes=2", "keep_failed=false", f"out={dropped}"]) == 1  # quota not filled
    assert TrajectoryStore.open(dropped).num_episodes == 0


REACH = "tasks=[reach-red,reach-green,reach-blue]"  # the demo's quickest tasks


def test_parallel_workers_record_the_tabletop_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.zarr"
    args = ["dataset=tabletop_demo", "episodes_per_task=2", f"out={out}", "workers=2", *FAST, REACH]
    assert main(args) == 0
    episodes = _episodes(out)
    tasks = ["reach-red", "reach-green", "reach-blue"]
    assert sorted(episodes) == sorted(
        (task, seed("tabletop", task, i), True) for task in tasks for i in (0, 1)
    )
    store = TrajectoryStore.open(out)
    assert {store.episode_meta(i).extra["expert_noise"] for i in range(6)} == {0.05}  # the recipe's noise
    assert store.schema.features[camera_key("front")].shape == (24, 24, 3)
    assert "episodes/s" in capsys.readouterr().out


def test_config_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = f"out={tmp_path / 'x.zarr'}"
    cases = {
        ("env=no_such_env", "episodes=1", out): "no env config named 'no_such_env'",
        ("env=metaworld_mt10", "episodes=1"): "out=",
        ("env=metaworld_mt10", "episode=1", out): "unknown key 'episode'",
        ("env=metaworld_mt10", out): "episodes=N",
        ("env=metaworld_mt10", "episodes=1", "tasks=[fly]", out): "unknown Meta-World task 'fly'",
        ("episodes=1", out): "env=<name>",
        (
            "env=metaworld_mt10",
            "env.phrasing=heldout",
            "episodes=1",
            out,
        ): "held-out ones are kept for evaluation",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "x.zarr").exists()


def test_existing_store_with_other_features_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.zarr"
    schema = Schema({camera_key("front"): FeatureSpec("uint8", (8, 8, 3), "image"),
                     ACTION_KEY: FeatureSpec("float32", (4,), "action")})  # fmt: skip
    TrajectoryStore.create(out, schema, fps=10, robot_type="other").close()
    argv = ["env=metaworld_mt10", "tasks=[reach-v3]", "episodes=1", f"out={out}", "workers=0", *FAST]
    assert main(argv) == 2
    assert "holds features" in capsys.readouterr().err
    store = TrajectoryStore.open(out, mode="a")  # refused without taking the writer lock for good
    assert store.num_episodes == 0 and store.schema == schema
    store.close()


def test_parallel_recording_writes_the_same_store_every_time(tmp_path: Path) -> None:
    """Episodes are committed in hand-out order, so worker timing never reorders the store."""
    stores = []
    for run in range(2):
        out = tmp_path / f"run{run}.zarr"
        args = ["dataset=tabletop_demo", "episodes_per_task=3", f"out={out}", "workers=2", *FAST, REACH]
        assert main(args) == 0
        stores.append(TrajectoryStore.open(out))
    first, second = stores
    assert _episodes(tmp_path / "run0.zarr") == _episodes(tmp_path / "run1.zarr")
    # Round-robin over tasks, each task's training seeds in order.
    assert [(task, s) for task, s, _ in _episodes(tmp_path / "run0.zarr")] == [
        (task, seed("tabletop", task, i))
        for i in range(3)
        for task in ("reach-red", "reach-green", "reach-blue")
    ]
    for key in (ACTION_KEY, STATE_KEY, camera_key("front")):
        np.testing.assert_array_equal(first.array(f"data/{key}")[:], second.array(f"data/{key}")[:])


def test_task_episodes_replace_the_count_of_the_tasks_they_name(tmp_path: Path) -> None:
    from vla.config import ConfigError, compose_command
    from vla.envs.record import RecordCommand, settings_from_config

    def quotas(*argv: str) -> dict[str, int]:
        args = [
            "dataset=metaworld_mt10",
            f"out={tmp_path / 's.zarr'}",
            TWO_TASKS,
            "episodes_per_task=4",
            *argv,
        ]
        return settings_from_config(compose_command("record", args, RecordCommand))[1].episodes_per_task

    assert quotas("task_episodes={reach-v3:9}") == {"reach-v3": 9, "button-press-topdown-v3": 4}
    # A suite task this recording does not select is left out, not added: recipes record subsets.
    assert quotas("task_episodes={push-v3:9}") == {"reach-v3": 4, "button-press-topdown-v3": 4}
    with pytest.raises(ConfigError, match=r"lacks: \['reach-v9'\]"):
        quotas("task_episodes={reach-v9:9}")
    with pytest.raises(ConfigError, match=r"task_episodes\[reach-v3\] must be a count >= 0, got -1"):
        quotas("task_episodes={reach-v3:-1}")
