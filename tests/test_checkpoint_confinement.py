"""Loading a checkpoint trusts nothing it names: files stay inside it, sizes fit its weights."""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path

import pytest
import torch
from test_train_helpers import make_config_root, make_tiny_store

from vla import checkpoint as ckpt
from vla.checkpoint import CheckpointError
from vla.policies.runtime import load_policy
from vla.train.cli import train_config
from vla.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(root: Path, *overrides: str) -> Path:
    make_config_root(root / "cfg", make_tiny_store(root / "store.zarr"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLA_CONFIG_ROOT", str(root / "cfg"))
        cfg = train_config(
            ["dataset=tinyds", "policy=testtiny", f"out={root / 'run'}", "train.steps=1", *overrides]
        )
        return train(cfg).run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("confine"))


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run's latest checkpoint, to tamper with."""
    target = tmp_path / "ckpt"
    shutil.copytree(ckpt.latest_checkpoint(run_dir), target)
    return target


def _edit_model_config(checkpoint: Path, **fields: object) -> None:
    path = checkpoint / "config.json"
    doc = json.loads(path.read_text())
    doc["model"].update(fields)
    path.write_text(json.dumps(doc))


def _backbone(path: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 4, stride=4), torch.nn.ReLU())
    torch.jit.save(torch.jit.script(net), str(path))
    return path


def _record_jit_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loaded: list[str] = []
    real = torch.jit.load
    monkeypatch.setattr(
        torch.jit, "load", lambda path, *a, **k: loaded.append(str(path)) or real(path, *a, **k)
    )
    return loaded


def test_encoder_file_outside_the_checkpoint_is_never_loaded(
    copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = _backbone(tmp_path / "elsewhere.ts")
    loaded = _record_jit_loads(monkeypatch)
    for name in (str(outside), os.path.relpath(outside, copy)):  # absolute, or ../ out of the checkpoint
        _edit_model_config(copy, vision_encoder=f"pretrained:{name}")
        with pytest.raises(CheckpointError, match=r"model\.vision_encoder.*outside"):
            load_policy(copy, device="cpu")
    assert loaded == []
    # A symlink inside the checkpoint that leads out of it is refused the same way.
    (copy / "files").mkdir()
    (copy / "files" / "link.ts").symlink_to(outside)
    _edit_model_config(copy, vision_encoder="pretrained:files/link.ts")
    with pytest.raises(CheckpointError, match="outside"):
        load_policy(copy, device="cpu")
    assert loaded == []
    # ... unless the user names that very file explicitly.
    with pytest.raises(CheckpointError, match="vision"):  # trusted, loaded, but the weights do not fit it
        load_policy(copy, device="cpu", trusted_files=[outside])
    assert loaded == [str(outside.resolve())]


def test_checkpoints_carry_their_encoder_files(tmp_path: Path) -> None:
    backbone = _backbone(tmp_path / "backbone.ts")
    run = _train(tmp_path / "t", f"policy.model.vision_encoder=pretrained:{backbone}")
    checkpoint = ckpt.latest_checkpoint(run)
    model = json.loads((checkpoint / "config.json").read_text())["model"]
    assert model["vision_encoder"] == "pretrained:files/vision_encoder.ts"
    backbone.unlink()  # the checkpoint no longer depends on the original file
    policy = load_policy(checkpoint, device="cpu")
    assert (
        policy.model.config.vision_encoder == f"pretrained:{checkpoint.resolve() / 'files/vision_encoder.ts'}"
    )


def test_latest_pointer_cannot_lead_out_of_the_run(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    pointer = run / "checkpoints" / "latest"
    elsewhere = tmp_path / "elsewhere" / "step_00000001"
    shutil.copytree(ckpt.latest_checkpoint(run_dir), elsewhere)
    for text in (os.path.relpath(elsewhere, pointer.parent), str(elsewhere), "../../elsewhere/step_00000001"):
        pointer.write_text(text + "\n")
        with pytest.raises(CheckpointError, match="latest names"):
            load_policy(run, device="cpu")
    (run / "checkpoints" / "step_99999999").symlink_to(elsewhere)
    pointer.write_text("step_99999999\n")
    with pytest.raises(CheckpointError, match="outside"):
        load_policy(run, device="cpu")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_embd", 65536),
        ("max_text_len", 10**9),
        ("n_layer", 10**6),
        ("max_action_tokens", 10**8),
        ("max_text_len", 48),
    ],
)
def test_sizes_are_checked_against_the_weights_before_allocating(copy: Path, field: str, value: int) -> None:
    _edit_model_config(copy, **{field: value})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=rf"config.json .*model\.{field}={value}"):
        load_policy(copy, device="cpu")
    assert time.monotonic() - started < 60  # generous: the refusal comes from the header, not a build
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, f"loading allocated {grown_mib:.0f} MiB before refusing"


def test_untampered_checkpoint_still_loads(copy: Path) -> None:
    assert load_policy(copy, device="cpu").spec.action_dim == 3


def test_export_program_outside_the_export_is_never_loaded(
    copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vla.policies import export

    outside = _backbone(tmp_path / "x.ts")
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    for name in ckpt.JSON_FILES.values():
        shutil.copyfile(copy / name, export_dir / name)
    loaded: list[Path] = []
    monkeypatch.setitem(export.FORMATS, "torchscript", ("policy.ts", None, lambda p: loaded.append(p)))
    for program in ("../x.ts", str(outside)):
        manifest = {
            "version": export.EXPORT_VERSION,
            "format": "torchscript",
            "program": program,
            "num_tokens": 1,
        }
        (export_dir / export.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(CheckpointError, match="'program'.*outside"):
            export.load_exported_policy(export_dir)
    assert loaded == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_sizes_are_checked_against_its_program(run_dir: Path, tmp_path: Path) -> None:
    from vla.policies.export import export_policy, load_exported_policy

    out = export_policy(ckpt.latest_checkpoint(run_dir), tmp_path / "export", format="torchscript")
    _edit_model_config(out, max_text_len=10**9)  # every text batch would be (B, 1e9)
    with pytest.raises(CheckpointError, match=r"model\.max_text_len=1000000000 .*policy\.ts"):
        load_exported_policy(out)
