"""Exported chunk prediction (torch.export, TorchScript) reproduces the eager model, with torch alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.checkpoint import CheckpointError
from vla.policies import load_policy
from vla.policies.export import (
    FORMATS,
    INPUT_NAMES,
    MANIFEST,
    example_inputs,
    export_policy,
    load_exported_policy,
    main,
)

FRONT, STATE = "observation.images.front", "observation.state"
# A tiny model with a 2-step history (so padded histories are exercised) and 6 action tokens.
SMALL = ["policy.model.n_layer=1", "policy.model.n_embd=32", "policy.model.n_head=2",
         "policy.model.horizon=2", "policy.model.n_obs_steps=2"]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only add synchronization on a busy CPU
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["ar_bins", "l1", "flow"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkpoint per action head: every head exports and runs the same way."""
    from vla.deploy.untrained import write_untrained_checkpoint

    root = tmp_path_factory.mktemp(f"export-{request.param}")
    overrides = [*SMALL, f"policy.model.action_head={request.param}"]
    return write_untrained_checkpoint(
        root / "ckpt", cameras=("front",), image_size=16, state_dim=4, action_dim=3, overrides=overrides
    )


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    return {fmt: export_policy(checkpoint, root / fmt.replace(".", "_"), format=fmt) for fmt in FORMATS}


def _batch(batch: int, steps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        FRONT: rng.integers(0, 256, (batch, steps, 16, 16, 3), dtype=np.uint8),
        STATE: rng.normal(size=(batch, steps, 4)).astype(np.float32),
        "instruction": ["pick up the red cube", "open the drawer, then close it", "wave"][:batch]
        + ["push"] * max(0, batch - 3),
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_exported_policy_matches_eager(checkpoint: Path, exported: dict[str, Path], fmt: str) -> None:
    eager = load_policy(checkpoint, device="cpu", flow_noise="fixed")  # an exported flow head's noise
    policy = load_exported_policy(exported[fmt])
    assert policy.spec == eager.spec
    # Batch sizes other than the example's (2), full and padded (T=1) histories.
    for batch, steps, seed in [(5, 2, 0), (1, 1, 1), (3, 1, 2)]:
        got = policy.predict_chunks(_batch(batch, steps, seed))
        want = eager.predict_chunks(_batch(batch, steps, seed))
        assert got.shape == (batch, 2, 3) and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    policy.reset("pick up the red cube")  # the stateful path runs on the exported program too
    frame = {k: v[0, 0] for k, v in _batch(1, 1, 3).items() if k != "instruction"}
    assert policy.act(frame).shape == (3,)


def test_exported_program_runs_without_vla(
    checkpoint: Path, exported: dict[str, Path], tmp_path: Path
) -> None:
    """Only torch: the vla package is made unimportable in the process that runs the program."""
    eager = load_policy(checkpoint, device="cpu")
    inputs = example_inputs(eager.model.config, batch=4, seed=7)
    num_tokens = json.loads((exported["torch.export"] / MANIFEST).read_text())["num_tokens"]
    want = eager.model.generate(
        dict(zip(INPUT_NAMES, inputs, strict=True)), eager.action_tokenizer.generation_options()
    )
    torch.save(inputs, tmp_path / "inputs.pt")
    code = (
        "import sys; sys.modules['vla'] = None\n"
        "import torch\n"
        f"program = torch.export.load({str(exported['torch.export'] / 'policy.pt2')!r}).module()\n"
        f"torch.save(program(*torch.load({str(tmp_path / 'inputs.pt')!r})), {str(tmp_path / 'out.pt')!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    got = torch.load(tmp_path / "out.pt")
    assert got.shape == want.shape and got.shape[:2] == (4, num_tokens)
    assert torch.equal(got, want) if not want.is_floating_point() else torch.allclose(got, want, atol=1e-5)


def test_bad_exports_are_named(checkpoint: Path, exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_policy(checkpoint, tmp_path / "x", format="onnx")
    with pytest.raises(CheckpointError, match="does not exist"):
        export_policy(tmp_path / "nothing", tmp_path / "y")
    with pytest.raises(CheckpointError, match="export.json is missing"):
        load_exported_policy(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in exported["torchscript"].iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "policy.ts").unlink()
    with pytest.raises(CheckpointError, match="policy.ts is missing"):
        load_exported_policy(broken)
    manifest = json.loads((broken / MANIFEST).read_text())
    (broken / MANIFEST).write_text(json.dumps({**manifest, "format": "onnx"}))
    with pytest.raises(CheckpointError, match="format 'onnx'"):
        load_exported_policy(broken)


def test_cli_main_exports(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"checkpoint={checkpoint}", f"out={tmp_path / 'ts'}", "format=torchscript"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "torchscript"
    assert main([f"checkpoint={checkpoint}"]) == 2
    assert "out is required" in capsys.readouterr().err


def test_flow_noise_is_fresh_per_chunk_seeded_or_fixed(checkpoint: Path) -> None:
    """Eager policies draw new flow noise for every chunk from a seeded generator; ``fixed`` repeats it."""
    batch = _batch(2, 2, 0)
    first, second = load_policy(checkpoint, device="cpu"), load_policy(checkpoint, device="cpu")
    a, b = first.predict_chunks(batch), first.predict_chunks(batch)
    np.testing.assert_array_equal(a, second.predict_chunks(batch))  # the same seed, the same noise
    np.testing.assert_array_equal(b, second.predict_chunks(batch))
    fixed = load_policy(checkpoint, device="cpu", flow_noise="fixed")
    np.testing.assert_array_equal(fixed.predict_chunks(batch), fixed.predict_chunks(batch))
    other_seed = load_policy(checkpoint, device="cpu", noise_seed=1).predict_chunks(batch)
    if first.model.config.action_head == "flow":
        assert not np.array_equal(a, b) and not np.array_equal(a, other_seed)
        assert first.flow_noise == "fresh" and fixed.flow_noise == "fixed"
    else:  # token and regression heads are deterministic whatever the setting
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, other_seed)
    with pytest.raises(ValueError, match="flow_noise must be one of"):
        load_policy(checkpoint, device="cpu", flow_noise="random")
    cold = load_policy(checkpoint, device="cpu", flow_noise_scale=0.0)  # fresh noise, scaled to nothing
    np.testing.assert_array_equal(cold.predict_chunks(batch), cold.predict_chunks(batch))
    if first.model.config.action_head == "flow":
        assert not np.array_equal(cold.predict_chunks(batch), a)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="flow_noise_scale must be a finite number >= 0"):
            load_policy(checkpoint, device="cpu", flow_noise_scale=bad)


def test_flow_steps_override_the_checkpoints_euler_steps(checkpoint: Path) -> None:
    """``flow_steps`` (the latency knob of ``vla eval``) changes a flow head's sampler; other heads refuse it."""
    batch = _batch(2, 2, 0)
    default = load_policy(checkpoint, device="cpu", flow_noise="fixed")
    if default.model.config.action_head != "flow":
        assert default.flow_steps is None
        with pytest.raises(ValueError, match="flow_steps applies to flow-head checkpoints"):
            load_policy(checkpoint, device="cpu", flow_steps=2)
        return
    own = default.model.config.flow_steps
    assert default.flow_steps == own and own > 1
    same = load_policy(checkpoint, device="cpu", flow_noise="fixed", flow_steps=own)
    np.testing.assert_array_equal(same.predict_chunks(batch), default.predict_chunks(batch))
    one = load_policy(checkpoint, device="cpu", flow_noise="fixed", flow_steps=1)
    assert one.flow_steps == 1
    assert not np.allclose(one.predict_chunks(batch), default.predict_chunks(batch))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="flow_steps must be an integer >= 1"):
            load_policy(checkpoint, device="cpu", flow_steps=bad)
