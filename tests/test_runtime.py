"""The policy runtime: load a checkpoint written by `vla train`, predict, act, and refuse bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_helpers import make_config_root, make_tiny_store

from vla.checkpoint import CheckpointError
from vla.policies import load_policy as load_policy_public
from vla.policies.runtime import Policy, load_policy
from vla.policy_spec import FeatureMismatchError, ObservationError
from vla.train.cli import train_config
from vla.train.loop import train

FRONT, WRIST, STATE = "observation.images.front", "observation.images.wrist", "observation.state"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runtime")
    make_config_root(root / "cfg", make_tiny_store(root / "store.zarr"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLA_CONFIG_ROOT", str(root / "cfg"))
        cfg = train_config(["dataset=tinyds", "policy=testtiny", f"out={root / 'run'}", "train.steps=2"])
        return train(cfg).run_dir


@pytest.fixture(scope="module")
def policy(run_dir: Path) -> Policy:
    return load_policy_public(run_dir, device="cpu")  # the documented entry point vla.load_policy


def _frame(rng: np.random.Generator | None = None) -> dict:
    rng = rng or np.random.default_rng(0)
    return {
        FRONT: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        WRIST: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        STATE: rng.normal(size=4).astype(np.float32),
        "instruction": "pick up the red cube",
    }


def test_spec_matches_the_training_data(policy: Policy) -> None:
    spec = policy.spec
    assert spec.camera_keys == (FRONT, WRIST) and spec.image_shape == (16, 16, 3)
    assert (spec.state_dim, spec.action_dim, spec.n_obs_steps, spec.chunk_size) == (4, 3, 2, 4)
    assert spec.fps == 10.0 and spec.action_names == ("a0", "a1", "a2")
    spec.check_features({FRONT: (16, 16, 3), WRIST: (16, 16, 3), STATE: (4,)})
    with pytest.raises(FeatureMismatchError, match="wrist"):
        spec.check_features({FRONT: (16, 16, 3), STATE: (4,)})
    with pytest.raises(FeatureMismatchError, match="observation.state"):
        spec.check_features({FRONT: (16, 16, 3), WRIST: (16, 16, 3), STATE: (7,)})


def test_predict_chunk_single_frame_and_history(policy: Policy) -> None:
    chunk = policy.predict_chunk(_frame())
    assert chunk.shape == (4, 3) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    history = {k: np.stack([v, v]) if k != "instruction" else v for k, v in _frame().items()}
    # A single frame is padded by repeating it, so it equals a history of that frame twice... except
    # that padded steps are masked; both must still be valid chunks of the right shape.
    assert policy.predict_chunk(history).shape == (4, 3)


def test_predict_chunks_batched_equals_one_by_one(policy: Policy) -> None:
    frames = [_frame(np.random.default_rng(i)) for i in range(3)]
    batch = {k: np.stack([f[k] for f in frames])[:, None] for k in (FRONT, WRIST, STATE)}
    batch["instruction"] = [f["instruction"] for f in frames]
    chunks = policy.predict_chunks(batch)
    assert chunks.shape == (3, 4, 3)
    for i, frame in enumerate(frames):
        np.testing.assert_allclose(policy.predict_chunk(frame), chunks[i], rtol=1e-4, atol=1e-4)
    # Actions are un-normalized: they live in the data's range, not in [-1, 1] bins.
    stats = policy.normalizer.stats["action"]
    assert np.all(chunks >= stats["q01"] - 3 * (stats["q99"] - stats["q01"]))


def test_act_requires_reset_then_replans(run_dir: Path) -> None:
    policy = load_policy(run_dir, device="cpu", replan_every=2)
    with pytest.raises(RuntimeError, match="before Policy.reset"):
        policy.act(_frame())
    policy.reset("pick up the red cube")
    actions = [policy.act(_frame(np.random.default_rng(i))) for i in range(5)]
    assert all(a.shape == (3,) and np.isfinite(a).all() for a in actions)
    # Step 5 reuses the pending chunk, yet its bad frame is still refused (never kept as history).
    bad = {**_frame(), STATE: np.array([np.nan, 0, 0, 0], np.float32)}
    with pytest.raises(ObservationError, match="NaN"):
        policy.act(bad)
    ensemble = load_policy(run_dir, device="cpu", temporal_ensemble=0.1)
    ensemble.reset("pick up the red cube")
    assert ensemble.act(_frame()).shape == (3,)


def test_the_policys_replan_interval_is_saved_and_used(tmp_path: Path, run_dir: Path) -> None:
    assert load_policy(run_dir, device="cpu").executor.replan_every == 4  # none set: the whole chunk
    root = run_dir.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLA_CONFIG_ROOT", str(root / "cfg"))
        args = ["dataset=tinyds", "policy=testtiny", "train.steps=1"]
        own = train(train_config([*args, "policy.replan_every=3", f"out={tmp_path / 'own'}"])).run_dir
        with pytest.raises(ValueError, match="replan_every=5.*4 actions"):
            train(train_config([*args, "policy.replan_every=5", f"out={tmp_path / 'long'}"]))
    policy = load_policy(own, device="cpu")
    assert policy.spec.replan_every == 3 and policy.executor.replan_every == 3
    assert load_policy(own, device="cpu", replan_every=1).executor.replan_every == 1  # the caller wins


def test_new_runs_hide_unknown_words_and_train_with_word_dropout(tmp_path: Path, run_dir: Path) -> None:
    assert not load_policy(run_dir, device="cpu").text_tokenizer.byte_fallback  # without dropout too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLA_CONFIG_ROOT", str(run_dir.parent / "cfg"))
        args = ["dataset=tinyds", "policy=testtiny", "train.steps=2", "train.word_dropout=0.3"]
        run = train(train_config([*args, f"out={tmp_path / 'wd'}"])).run_dir
    policy = load_policy(run, device="cpu")
    tokens, is_pad = policy.text_tokenizer.encode(["zzq the"], 8)  # "the": in all three instructions
    assert tokens[0, 1] == 1 and is_pad[0, 1]  # UNK, hidden from the model as the dropout hid words
    assert policy.predict_chunk({**_frame(), "instruction": "zzq the"}).shape == (4, 3)


def test_new_runs_ground_unknown_words_to_the_one_training_instruction_they_fit(run_dir: Path) -> None:
    policy = load_policy(run_dir, device="cpu")
    tokenizer = policy.text_tokenizer
    # The synthetic store records no task names: each training instruction counts as its own task.
    assert tokenizer.grounding.tasks and all(text == task for text, task in tokenizer.grounding.tasks.items())
    assert "pick up the red cube" in tokenizer.grounding.tasks
    grounded, _ = tokenizer.encode(["zzq the red cube", "pick up the red cube"], 8)
    assert torch.equal(grounded[0], grounded[1])  # only "pick up the red cube" holds "red" and "cube"
    assert policy.instruction_as_read("Zzq the red cube") == "pick up the red cube"
    assert policy.instruction_as_read("zzq the") == "the"  # all three hold "the": hidden, no guess


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda f: f.pop(WRIST), WRIST, "missing"),
        (lambda f: f.update({FRONT: np.zeros((32, 32, 3), np.uint8)}), FRONT, "shape"),
        (lambda f: f.update({FRONT: np.zeros((16, 16, 3), np.float32)}), FRONT, "uint8"),
        (lambda f: f.update({STATE: np.array([0, np.nan, 0, 0], np.float32)}), STATE, "NaN"),
        (lambda f: f.update({STATE: np.zeros(5, np.float32)}), STATE, "shape"),
        (lambda f: f.update({"timestamp": time.time() - 5.0}), "timestamp", "old"),
        (lambda f: f.update({"instruction": 3}), "instruction", "not str"),
    ],
)
def test_bad_observations_name_the_field(run_dir: Path, change, field: str, message: str) -> None:
    policy = load_policy(run_dir, device="cpu", max_age_s=1.0)
    frame = _frame()
    change(frame)
    with pytest.raises(ObservationError, match=message) as info:
        policy.predict_chunk(frame)
    assert info.value.field == field


def test_fresh_timestamp_is_accepted(run_dir: Path) -> None:
    policy = load_policy(run_dir, device="cpu", max_age_s=5.0)
    assert policy.predict_chunk({**_frame(), "timestamp": time.time()}).shape == (4, 3)


def test_broken_checkpoints_are_named(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    broken = tmp_path / "broken"
    shutil.copytree(latest, broken)
    (broken / "normalization.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="normalization.json"):
        load_policy(broken, device="cpu")
    (broken / "normalization.json").unlink()
    with pytest.raises(CheckpointError, match="normalization.json is missing"):
        load_policy(broken, device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nothing", device="cpu")


def test_precision_choice_is_honoured_or_refused(run_dir: Path) -> None:
    from vla.evaluation.loaders import load_eval_policy

    int8 = load_policy(run_dir, device="cpu", precision="int8")
    assert int8.precision == "int8" and load_policy(run_dir, device="cpu").precision == "fp32"
    chunk = int8.predict_chunk(_frame())
    assert chunk.shape == (4, 3) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    with pytest.raises(ValueError, match="precision must be one of"):
        load_policy(run_dir, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="scripted"):
        load_eval_policy("scripted", None, "cpu", "int8")
