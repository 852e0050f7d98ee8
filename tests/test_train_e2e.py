"""`vla train` end to end on a tiny generated store: CLI, checkpoint contents, exact resume, mismatches."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_train_helpers import make_config_root, make_tiny_store

from vla.cli import main as vla_main
from vla.config import compose
from vla.normalization import NormalizationError
from vla.policies.checks import FeatureMismatchError
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

    cfg = compose(["dataset=tinyds", "policy=testtiny", f"out={out}", *extra])
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
    assert json.loads((checkpoint / "train_state.json").read_text())["step"] == 3
    assert list((out / "tb").iterdir()), "no TensorBoard events written"
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in row for row in logged) and all(np.isfinite(r["train/loss"]) for r in logged)


def test_cli_reports_bad_arguments(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vla_main(["train", "dataset=nope", "policy=testtiny"]) == 2
    assert "nope" in capsys.readouterr().err
    assert (
        vla_main(["train", "dataset=tinyds", "policy=testtiny", f"out={tiny_root / 'x'}", "train.stepz=1"])
        == 1
    )
    assert "stepz" in capsys.readouterr().err


def test_resume_continues_exactly(tiny_root: Path) -> None:
    reference = _losses(tiny_root / "straight")
    interrupted = _losses(tiny_root / "resumed", stop_after=4)  # checkpoint at step 3, crash after 4
    assert max(interrupted) == 4
    resumed = _losses(tiny_root / "resumed")  # same out dir: resumes from its latest checkpoint
    assert sorted(resumed) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step
    assert reference[1] != pytest.approx(reference[4])  # the losses do change: the check can fail


def test_resume_against_other_data_names_the_mismatch(tiny_root: Path) -> None:
    out = tiny_root / "mismatch_run"
    train(compose(["dataset=tinyds", "policy=testtiny", f"out={out}", "train.steps=1"]))
    other_stats = make_tiny_store(tiny_root / "other.zarr", seed=7)
    with pytest.raises(NormalizationError, match="differs between store"):
        train(
            compose(["policy=testtiny", f"store={other_stats}", f"resume={out}", f"out={tiny_root / 'o1'}"])
        )

    from vla.data.synthetic import synthetic_schema, write_synthetic_store

    schema = synthetic_schema(("front", "wrist"), image_size=16, state_dim=5, action_dim=3)
    wider = tiny_root / "wider.zarr"
    write_synthetic_store(wider, 4, episode_length=12, schema=schema).compute_stats()
    with pytest.raises(FeatureMismatchError, match="observation.state"):
        train(compose(["policy=testtiny", f"store={wider}", f"resume={out}", f"out={tiny_root / 'o2'}"]))
    with pytest.raises(FeatureMismatchError, match="state_dim"):
        train(
            compose(
                ["policy=testtiny", f"store={wider}", f"out={tiny_root / 'o3'}", "policy.model.state_dim=4"]
            )
        )
