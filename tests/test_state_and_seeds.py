"""What a policy reads of the state (state_exclude) and the seeds each task records and evaluates on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train_helpers import make_config_root, make_tiny_store

from vla.features import kept_state_indices
from vla.seeds import (
    EVAL_SEED_RANGE,
    TRAIN_SEED_RANGE,
    TRAIN_SEEDS_PER_TASK,
    eval_seeds,
    first_train_seed,
    task_numbers,
    train_seeds,
)


def test_kept_state_indices_drop_matching_names_and_name_bad_patterns():
    names = ["j1.pos", "j2.pos", "j1.vel", "j2.vel", "gripper.opening"]
    assert kept_state_indices(names, []) is None  # nothing excluded: the model reads every entry
    assert kept_state_indices(names, ["*.vel"]) == [0, 1, 4]
    assert kept_state_indices(names, ["*.vel", "gripper.*"]) == [0, 1]
    # One policy file serves several suites: a pattern with nothing to drop is named, not fatal.
    with pytest.warns(UserWarning, match=r"\['\*\.acc'\] match no state entry"):
        assert kept_state_indices(names, ["*.vel", "*.acc"]) == [0, 1, 4]
    with pytest.raises(ValueError, match="no names"):
        kept_state_indices(None, ["*.vel"])


def test_a_policy_trained_without_some_state_entries_never_reads_them(tmp_path: Path, monkeypatch) -> None:
    from vla.policies import load_policy
    from vla.train.cli import train_config
    from vla.train.loop import train

    make_config_root(tmp_path / "cfg", make_tiny_store(tmp_path / "store.zarr"))
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(tmp_path / "cfg"))
    run = train(train_config(["dataset=tinyds", "policy=testtiny", f"out={tmp_path / 'run'}", "train.steps=2",
                              "policy.model.action_head=l1", "policy.model.state_exclude=[q1,q3]"])).run_dir  # fmt: skip
    policy = load_policy(run, device="cpu")
    assert policy.spec.state_dim == 4 and policy.spec.state_indices == (0, 2)  # the robot still sends 4
    assert policy.model.config.state_dim == 2
    rng = np.random.default_rng(0)
    frame = {
        "observation.images.front": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "observation.state": np.array([0.1, 5.0, -0.3, 7.0], np.float32),
        "instruction": "pick up the red cube",
    }
    chunk = policy.predict_chunk(frame)
    other = dict(frame, **{"observation.state": np.array([0.1, -9.0, -0.3, 0.0], np.float32)})
    np.testing.assert_array_equal(policy.predict_chunk(other), chunk)  # q1, q3 are never read
    moved = dict(frame, **{"observation.state": np.array([2.1, 5.0, -0.3, 7.0], np.float32)})
    assert not np.array_equal(policy.predict_chunk(moved), chunk)


def test_every_task_has_its_own_training_seeds_disjoint_from_evaluation():
    all_tasks = ["a", "b", "c"]
    numbers = task_numbers(["c", "a", "z"], all_tasks)
    assert numbers == {"c": 2, "a": 0, "z": 3}  # the place in the suite's list; others after it
    seeds = {task: set(train_seeds(100, task_number=n)) for task, n in numbers.items()}
    assert seeds["a"].isdisjoint(seeds["c"]) and seeds["c"].isdisjoint(seeds["z"])
    assert first_train_seed(2, start=5) == 2 * TRAIN_SEEDS_PER_TASK + 5
    every = set().union(*seeds.values())
    assert every <= set(TRAIN_SEED_RANGE) and not every & set(eval_seeds(1000, 3))
    assert all(s in EVAL_SEED_RANGE for s in eval_seeds(10, 2))
    with pytest.raises(ValueError, match="below"):
        train_seeds(10, task_number=len(TRAIN_SEED_RANGE) // TRAIN_SEEDS_PER_TASK)
