"""Pieces of `vla train` on their own: schedule, sampler, EMA, checkpoint files (no pickle)."""

from __future__ import annotations

import pickletools
import random

import numpy as np
import pytest
import torch

from vla import checkpoint as ckpt
from vla.data.loader import StepBatchSampler
from vla.train.config import TrainConfig
from vla.train.ema import EMA
from vla.train.optim import build_optimizer, lr_at

DOCS = {name: {"name": name} for name in ckpt.JSON_FILES}


def test_lr_warmup_then_cosine_to_floor() -> None:
    lrs = [lr_at(s, 1.0, 10, 110, 0.1) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # monotone decay after warmup
    assert lr_at(110, 1.0, 10, 110, 0.1) == pytest.approx(0.1)


def test_the_optimizer_is_fused_on_the_cpu_and_updates_as_torchs_default_adamw() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model, 1e-2, 0.1)
    assert fused.defaults["fused"] is True
    decay = [p for p in reference.parameters() if p.ndim >= 2]
    rest = [p for p in reference.parameters() if p.ndim < 2]
    plain = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
    )
    x = torch.randn(8, 3)
    for net, optimizer in ((model, fused), (reference, plain)):
        net(x).pow(2).mean().backward()
        optimizer.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_sampler_order_is_a_pure_function_of_seed_and_step() -> None:
    full = StepBatchSampler(50, 4, seed=3, end_step=30)
    resumed = StepBatchSampler(50, 4, seed=3, start_step=17, end_step=30)
    assert list(full)[17:] == list(resumed)
    other_seed = StepBatchSampler(50, 4, seed=4, end_step=30)
    assert list(full) != list(other_seed)
    # One epoch (12 full batches of 4 out of 50) visits distinct samples.
    epoch = [i for batch in list(full)[:12] for i in batch]
    assert len(set(epoch)) == 48


def test_sampler_shards_global_batches_across_ranks() -> None:
    ranks = [StepBatchSampler(40, 3, seed=0, end_step=10, rank=r, world_size=2) for r in range(2)]
    single = StepBatchSampler(40, 6, seed=0, end_step=10)
    for step in range(10):
        a, b = ranks[0].batch_for_step(step), ranks[1].batch_for_step(step)
        assert not set(a) & set(b)
        assert a + b == single.batch_for_step(step)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(5, 3, seed=0, end_step=1, world_size=2)


def test_ema_tracks_weights() -> None:
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(50):
        ema.update(model)
    torch.testing.assert_close(ema.module.weight, model.weight, atol=1e-3, rtol=0)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_train_config_rejects_unknown_and_bad_values() -> None:
    config, defaulted = TrainConfig.from_sections({"steps": 5}, {"lr": 1e-3})
    assert config.steps == 5 and config.lr == 1e-3 and "steps" not in defaulted and "batch_size" in defaulted
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.from_sections({"stepz": 5})
    with pytest.raises(ValueError, match="train.ema_decay"):
        TrainConfig.from_sections({"ema_decay": 1.5})
    with pytest.raises(ValueError, match="train.curriculum_tasks"):
        TrainConfig.from_sections({"curriculum_steps": 100})  # steps without the tasks they are for
    curriculum, _ = TrainConfig.from_sections({"curriculum_steps": 100, "curriculum_tasks": ["*reach-*"]})
    assert curriculum.curriculum_tasks == ("*reach-*",)
    assert curriculum.to_dict()["curriculum_tasks"] == ["*reach-*"]
    weighted, _ = TrainConfig.from_sections({"order": "tasks", "task_weights": {"*press-*": 2}})
    assert weighted.task_weights == {"*press-*": 2.0}
    assert weighted.to_dict()["task_weights"] == {"*press-*": 2.0}
    with pytest.raises(ValueError, match="train.task_weights need train.order=tasks"):
        TrainConfig.from_sections({"task_weights": {"*press-*": 2.0}})  # the default order ignores tasks
    with pytest.raises(ValueError, match="train.task_weights must be finite"):
        TrainConfig.from_sections({"order": "tasks", "task_weights": {"*press-*": -1.0}})
    with pytest.raises(ValueError, match="train.word_dropout"):
        TrainConfig.from_sections({"word_dropout": 1.0})  # every word gone: nothing left to read


def _trained_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = build_optimizer(model, 1e-2, 0.1)
    for _ in range(3):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def _has_pickle_opcodes(data: bytes) -> bool:
    """True when ``data`` parses as a pickle stream (torch.save files do)."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:
        return False
    return len(ops) > 1


def test_checkpoint_round_trip_without_pickle(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = _trained_optimizer(model)
    ema = EMA(model, 0.9)
    random.seed(5)
    np.random.seed(5)
    path = ckpt.save_checkpoint(
        tmp_path, 3, model=model, ema_model=ema.module, optimizer=optimizer, documents=DOCS, keep_last=2
    )
    expected_draws = (random.random(), float(np.random.rand()), torch.rand(1).item())

    names = sorted(p.name for p in path.iterdir())
    assert all(n.endswith((".safetensors", ".json")) for n in names), names
    for file in path.iterdir():
        data = file.read_bytes()
        assert (
            not data.startswith(b"\x80") and b"PK\x03\x04" not in data[:4] and not _has_pickle_opcodes(data)
        )
    assert ckpt.latest_checkpoint(tmp_path) == path and ckpt.resolve_checkpoint(tmp_path) == path

    torch.manual_seed(1)
    clone = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    clone_opt = build_optimizer(clone, 1e-2, 0.1)
    ckpt.load_weights(clone, path / ckpt.MODEL_FILE)
    meta = ckpt.load_train_state(path, clone_opt)
    assert meta["step"] == 3
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected_draws
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(optimizer.state[p][key], clone_opt.state[clone[0].weight if p is model[0].weight else
                                       dict(zip(model.parameters(), clone.parameters(), strict=True))[p]][key])  # fmt: skip
    assert clone_opt.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]


def test_checkpoints_pruned_and_latest_follows(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = _trained_optimizer(model)
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(
            tmp_path, step, model=model, ema_model=model, optimizer=optimizer, documents=DOCS, keep_last=2
        )
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step_00000003", "step_00000004"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000004"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_weights_that_do_not_fit_and_missing_files_are_named(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    path = ckpt.save_checkpoint(
        tmp_path,
        1,
        model=model,
        ema_model=model,
        optimizer=_trained_optimizer(model),
        documents=DOCS,
        keep_last=1,
    )
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.load_weights(torch.nn.Linear(4, 2), path / ckpt.MODEL_FILE)
    (path / "policy.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="policy.json"):
        ckpt.check_complete(path)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.resolve_checkpoint(tmp_path / "nowhere")


def test_simulation_eval_hook_reports_success_and_survives_failures(tmp_path) -> None:
    from types import SimpleNamespace

    from vla.train.hooks import evaluate_in_simulation

    calls = []

    def evaluator(checkpoint, env, **kwargs):
        calls.append((checkpoint, env, kwargs))
        return SimpleNamespace(overall=[SimpleNamespace(phrasing="train", success_rate=0.5)])

    scalars = evaluate_in_simulation(evaluator, tmp_path / "step_1", {"name": "tabletop"}, 3, tmp_path)
    assert scalars == {"eval/success_train": 0.5}
    assert calls[0][1] == {"name": "tabletop"} and calls[0][2]["episodes_per_task"] == 3

    def broken(*args, **kwargs):
        raise RuntimeError("simulator crashed")

    assert evaluate_in_simulation(broken, tmp_path / "step_1", {"name": "tabletop"}, 3, tmp_path) == {}
    assert evaluate_in_simulation(evaluator, tmp_path / "step_1", None, 3, tmp_path) == {}


def test_the_action_head_decides_the_tokenizer_and_contradictions_are_named():
    from vla.train.run import action_head_and_tokenizer

    fast = {"fast": {"scale": 10, "bpe_vocab_size": 256}}
    assert action_head_and_tokenizer({}, None) == ("ar_bins", "binning", {})
    assert action_head_and_tokenizer({"action_head": "ar_fast"}, fast) == ("ar_fast", "fast", fast["fast"])
    # Switching heads needs no other change: only the chosen head's tokenizer reads its options.
    assert action_head_and_tokenizer({"action_head": "flow"}, fast) == ("flow", "continuous", {})
    assert action_head_and_tokenizer({"action_head": "l1"}, None) == ("l1", "continuous", {})
    # The older forms still pick the matching token head.
    assert action_head_and_tokenizer({}, "fast") == ("ar_fast", "fast", {})
    assert action_head_and_tokenizer({}, {"name": "fast", "scale": 5}) == ("ar_fast", "fast", {"scale": 5})
    with pytest.raises(ValueError, match="uses the 'continuous' action tokenizer, not 'binning'"):
        action_head_and_tokenizer({"action_head": "l1"}, "binning")
    with pytest.raises(ValueError, match="unknown tokenizers \\['fats'\\]"):
        action_head_and_tokenizer({"action_head": "ar_fast"}, {"fats": {}})
    with pytest.raises(ValueError, match="unknown action_head 'mlp'"):
        action_head_and_tokenizer({"action_head": "mlp"}, None)
