"""`vla train` end to end on a tiny generated store: CLI, checkpoint contents, exact resume, mismatches."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_train_helpers import make_config_root, make_tiny_store

from vla.cli import main as vla_main
from vla.code_version import code_version
from vla.normalization import NormalizationError
from vla.policy_spec import FeatureMismatchError
from vla.train.cli import train_config
from vla.train.loop import train


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_config_root(root / "cfg", make_tiny_store(root / "store.zarr"))
    return root


@pytest.fixture(autouse=True)
def _config_root(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(tiny_root / "cfg"))


def _losses(out: Path, *extra: str, stop_after: int | None = None) -> dict[int, float]:
    losses: dict[int, float] = {}

    def record(step: int, loss: float) -> None:
        losses[step] = loss
        if stop_after is not None and step == stop_after:
            raise KeyboardInterrupt  # a crash after this step: its checkpoint was never written

    cfg = train_config(["dataset=tinyds", "policy=testtiny", f"out={out}", *extra])
    with contextlib.suppress(KeyboardInterrupt):
        train(cfg, on_step=record)
    return losses


def test_cli_writes_a_complete_checkpoint(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tiny_root / "cli_run"
    assert vla_main(["train", "dataset=tinyds", "policy=testtiny", f"out={out}", "train.steps=3"]) == 0
    assert str(out) in capsys.readouterr().out
    checkpoint = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    names = {p.name for p in checkpoint.iterdir()}
    assert names == {
        "model.safetensors", "ema.safetensors", "config.json", "normalization.json", "action_tokenizer.json",
        "text_tokenizer.json", "policy.json", "train_state.safetensors", "train_state.json",
    }  # fmt: skip
    policy = json.loads((checkpoint / "policy.json").read_text())
    assert policy["camera_keys"] == ["observation.images.front", "observation.images.wrist"]
    assert policy["image_shape"] == [16, 16, 3] and policy["chunk_size"] == 4 and policy["action_dim"] == 3
    state = json.loads((checkpoint / "train_state.json").read_text())
    assert state["step"] == 3 and state["code"] == code_version()  # the code that wrote the checkpoint
    assert list((out / "tb").iterdir()), "no TensorBoard events written"
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in row for row in logged) and all(np.isfinite(r["train/loss"]) for r in logged)


def test_cli_reports_bad_arguments(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vla_main(["train", "dataset=nope", "policy=testtiny"]) == 2
    assert "nope" in capsys.readouterr().err
    assert (
        vla_main(["train", "dataset=tinyds", "policy=testtiny", f"out={tiny_root / 'x'}", "train.stepz=1"])
        == 2
    )
    assert "stepz" in capsys.readouterr().err
    assert not (tiny_root / "x").exists()  # refused before anything ran


def test_on_step_observes_every_step_without_changing_the_logging_cadence(tiny_root: Path) -> None:
    out = tiny_root / "observed"
    seen: list[int] = []
    cfg = train_config(["dataset=tinyds", "policy=testtiny", f"out={out}", "train.log_every=4"])
    train(cfg, on_step=lambda step, loss: seen.append(step) if np.isfinite(loss) else None)
    assert seen == [1, 2, 3, 4, 5, 6]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "train/loss" in row] == [4, 6]  # log_every, and the last step


def test_training_batches_pad_text_to_the_stores_longest_instruction(tiny_root: Path) -> None:
    from vla.train.distributed import DistInfo
    from vla.train.run import prepare_run

    out = tiny_root / "text_positions"
    cfg = train_config(["dataset=tinyds", "policy=testtiny", f"out={out}", "policy.model.max_text_len=16"])
    data = prepare_run(cfg, out, DistInfo(), torch.device("cpu"))
    batch = next(iter(data.train_loader(start_step=0)))
    assert data.model.config.max_text_len == 16  # the model still reads up to 16 (inference pads to it)
    assert batch["text_tokens"].shape[1] == 8  # "push the blue block to the goal": BOS + 7 words


def test_vla_train_hands_the_simulation_evaluator_to_the_loop(
    tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vla.evaluation

    (tiny_root / "cfg" / "envs" / "tinyenv.yaml").write_text("suite: tabletop\ntasks: [reach-red]\n")
    calls = []

    def evaluate_checkpoint(checkpoint, env, **options):
        calls.append((Path(checkpoint).name, env["suite"], options["episodes_per_task"]))
        return SimpleNamespace(overall=[SimpleNamespace(phrasing="train", success_rate=0.25)])

    monkeypatch.setattr(vla.evaluation, "evaluate_checkpoint", evaluate_checkpoint)
    out = tiny_root / "evaluated"
    argv = ["train", "dataset=tinyds", "policy=testtiny", "env=tinyenv", f"out={out}", "train.steps=4",
            "train.eval_every=2", "train.eval_episodes=3"]  # fmt: skip
    assert vla_main(argv) == 0
    assert calls == [("step_00000002", "tabletop", 3), ("step_00000004", "tabletop", 3)]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "eval/success_train" in row] == [2, 4]


def test_multirun_trains_every_combination_in_order(
    tiny_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny_root / "sweep"
    argv = ["train", "--multirun", "dataset=tinyds", "policy=testtiny", f"out={out}", "train.steps=1",
            "train.lr=1e-3,2e-3", "train.seed=0,1"]  # fmt: skip
    assert vla_main(argv) == 0
    printed = capsys.readouterr().out
    assert "job 3: dataset=tinyds policy=testtiny" in printed and "train.lr=0.002 train.seed=1" in printed
    for job, (lr, seed) in enumerate([(1e-3, 0), (1e-3, 1), (2e-3, 0), (2e-3, 1)]):
        checkpoints = out / str(job) / "checkpoints"
        saved = json.loads(
            (checkpoints / (checkpoints / "latest").read_text().strip() / "config.json").read_text()
        )
        assert (saved["train"]["lr"], saved["train"]["seed"], saved["train"]["steps"]) == (lr, seed, 1)
    # Every job is checked before the first trains: a bad value in the last job trains nothing.
    bad = tiny_root / "bad_sweep"
    assert (
        vla_main(["train", "-m", "dataset=tinyds", "policy=testtiny", f"out={bad}", "train.steps=1,x"]) == 2
    )
    assert "train.steps" in capsys.readouterr().err and not bad.exists()


def test_resume_continues_exactly(tiny_root: Path) -> None:
    reference = _losses(tiny_root / "straight")
    interrupted = _losses(tiny_root / "resumed", stop_after=4)  # checkpoint at step 3, crash after 4
    assert max(interrupted) == 4
    resumed = _losses(tiny_root / "resumed")  # same out dir: resumes from its latest checkpoint
    assert sorted(resumed) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step
    assert reference[1] != pytest.approx(reference[4])  # the losses do change: the check can fail


def test_compiled_training_follows_the_eager_one(tiny_root: Path) -> None:
    """``train.compile=true`` (tiny128's default) trains the same model as eager training: the same
    random draws (flow noise and times) and losses equal to float tolerance; the checkpoint holds the
    plain module's weights."""
    flow = ("policy.model.dropout=0.0", "policy.model.action_head=flow", "train.steps=3")
    eager = _losses(tiny_root / "eager", *flow)
    compiled = _losses(tiny_root / "compiled", *flow, "train.compile=true")
    assert sorted(compiled) == [1, 2, 3]
    for step in (1, 2, 3):
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step
    assert eager[1] != pytest.approx(eager[3], rel=1e-4)  # the losses do move: the check can fail
    checkpoint = tiny_root / "compiled" / "checkpoints" / "step_00000003"
    assert "_orig_mod" not in (checkpoint / "model.safetensors").read_bytes()[:4096].decode("latin-1")


def test_resume_against_other_data_names_the_mismatch(tiny_root: Path) -> None:
    out = tiny_root / "mismatch_run"
    train(train_config(["dataset=tinyds", "policy=testtiny", f"out={out}", "train.steps=1"]))
    other_stats = make_tiny_store(tiny_root / "other.zarr", seed=7)
    with pytest.raises(NormalizationError, match="differs between store"):
        train(
            train_config(
                ["policy=testtiny", f"store={other_stats}", f"resume={out}", f"out={tiny_root / 'o1'}"]
            )
        )

    from vla.data.synthetic import synthetic_schema, write_synthetic_store

    schema = synthetic_schema(("front", "wrist"), image_size=16, state_dim=5, action_dim=3)
    wider = tiny_root / "wider.zarr"
    write_synthetic_store(wider, 4, episode_length=12, schema=schema).compute_stats()
    with pytest.raises(FeatureMismatchError, match="observation.state"):
        train(train_config(["policy=testtiny", f"store={wider}", f"resume={out}", f"out={tiny_root / 'o2'}"]))
    with pytest.raises(FeatureMismatchError, match="state_dim"):
        train(
            train_config(
                ["policy=testtiny", f"store={wider}", f"out={tiny_root / 'o3'}", "policy.model.state_dim=4"]
            )
        )
