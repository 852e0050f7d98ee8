"""The training loop: one function, :func:`train`, from a composed config to a run directory.

Single process, or one process per GPU under ``torchrun`` (DDP). Every step's batch is a pure function
of (seed, step) (:mod:`vla.train.sampler`), the learning rate a pure function of the step
(:mod:`vla.train.optim`), and checkpoints hold every RNG, so a resumed run continues exactly where
the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from vla import checkpoint as ckpt
from vla.devices import resolve_device
from vla.inputs import to_model_inputs
from vla.progress import progress_bar
from vla.train.augment import random_shift
from vla.train.distributed import DistInfo, all_reduce_mean, barrier, init_distributed, shutdown
from vla.train.ema import EMA
from vla.train.hooks import Evaluator, MetricsLog, evaluate_in_simulation
from vla.train.optim import build_optimizer, lr_at, set_lr
from vla.train.run import RunData, prepare_run, run_directory, seed_everything

log = logging.getLogger(__name__)

# Called after every step with (step number just completed, this process's loss at that step); tests
# use it to follow or interrupt a run. It only observes: logging and the loss all-reduce keep their
# own cadence (train.log_every) whether or not a callback is set.
StepCallback = Callable[[int, float], None]


@dataclass
class TrainResult:
    """What a finished :func:`train` call leaves: where it wrote, and the trained modules."""

    run_dir: Path
    step: int
    model: torch.nn.Module
    ema_model: torch.nn.Module


class LossModule(torch.nn.Module):
    """Wraps ``VLA.loss`` as ``forward`` so DDP (which only hooks ``forward``) syncs its gradients."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: dict[str, torch.Tensor], tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.loss(obs, tokens, mask)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, loader: Any, device: torch.device, amp: bool, max_batches: int
) -> float:
    """Mean loss of ``model`` over at most ``max_batches`` batches of held-out episodes."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        obs = to_model_inputs(batch, device)
        with _autocast(device, amp):
            loss = model.loss(obs, batch["action_tokens"].to(device), batch["token_mask"].to(device))
        total += float(loss) * len(batch["action_tokens"])
        count += len(batch["action_tokens"])
    model.train(was_training)
    return total / max(count, 1)


def train(
    cfg: DictConfig, *, evaluator: Evaluator | None = None, on_step: StepCallback | None = None
) -> TrainResult:
    """Train as ``cfg`` says (see :mod:`vla.train.cli`).

    ``evaluator`` rolls a saved checkpoint out in simulation every ``train.eval_every`` steps (``vla
    train`` passes :func:`vla.evaluation.evaluate_checkpoint`); without one, ``eval_every`` is
    ignored with a warning. ``on_step`` observes every step (:data:`StepCallback`).
    """
    device = resolve_device(str(cfg.get("device", "auto")))
    dist_info = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    try:
        run_dir = run_directory(cfg, dist_info)
        return _train(cfg, run_dir, device, dist_info, evaluator, on_step)
    finally:
        shutdown(dist_info)


def _train(
    cfg: DictConfig,
    run_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    evaluator: Evaluator | None,
    on_step: StepCallback | None,
) -> TrainResult:
    data: RunData = prepare_run(cfg, run_dir, dist_info, device)
    tc = data.train_config
    model = data.model
    ema = EMA(model, tc.ema_decay)
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, tc.betas)
    step = 0
    if data.resume_from is not None:
        ckpt.load_weights(model, data.resume_from / ckpt.MODEL_FILE)
        ckpt.load_weights(ema.module, data.resume_from / ckpt.EMA_FILE)
        state = ckpt.load_train_state(data.resume_from, optimizer)  # restores every RNG as well
        step, ema.updates = int(state["step"]), int(state.get("ema_updates", state["step"]))
    else:
        seed_everything(tc.seed + dist_info.rank)  # ranks draw different dropout masks
    loss_module: torch.nn.Module = LossModule(model)
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=ids)
    if tc.compile:
        # On a compile failure (no C++ compiler on the machine, an op inductor cannot lower) dynamo
        # logs the error and runs that code eagerly: an optimization never ends a run.
        torch._dynamo.config.suppress_errors = True
        # Random ops (the flow head's noise and times, dropout) draw what eager torch draws from the
        # same seed, so a run's batches and numbers do not depend on whether it was compiled.
        torch._inductor.config.fallback_random = True
        loss_module = torch.compile(loss_module)
    loader = data.train_loader(start_step=step)
    if step >= tc.steps and dist_info.is_main:
        log.info("%s is already at step %d of train.steps=%d; nothing to do", run_dir, step, tc.steps)
    metrics = MetricsLog(run_dir) if dist_info.is_main else None
    if tc.eval_every and dist_info.is_main and evaluator is None:
        log.warning(
            "train.eval_every is set but train() was given no evaluator; skipping simulation evaluation"
        )
    evaluate_every = tc.eval_every if evaluator is not None and dist_info.is_main else 0
    progress = _progress_bar(tc, step, dist_info)
    global_batch = tc.batch_size * dist_info.world_size
    window_start, window_steps = time.perf_counter(), 0

    def save(at_step: int) -> Path:
        return ckpt.save_checkpoint(
            run_dir, at_step, model=model, ema_model=ema.module, optimizer=optimizer,
            documents=data.documents, keep_last=tc.keep_last, extra_state={"ema_updates": ema.updates,
            "samples_seen": at_step * global_batch, "epoch": data.epoch_of(at_step)},
        )  # fmt: skip

    model.train()
    try:
        for batch in loader:
            lr = lr_at(step, tc.lr, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
            set_lr(optimizer, lr)
            obs = to_model_inputs(batch, device)
            # Augmentations are seeded by (seed, rank, step) so a resumed run draws the same ones.
            step_seed = (tc.seed * 1_000_003 + dist_info.rank) * 10_000_019 + step
            if tc.augment_shift:
                shift_rng = torch.Generator().manual_seed(step_seed)
                obs["images"] = random_shift(obs["images"], tc.augment_shift, shift_rng)
            if data.word_dropout is not None:
                word_rng = torch.Generator().manual_seed(step_seed * 7 + 1)  # a stream of its own
                obs["text_is_pad"] = data.word_dropout(obs["text_tokens"], obs["text_is_pad"], word_rng)
            tokens, mask = batch["action_tokens"].to(device), batch["token_mask"].to(device)
            with _autocast(device, tc.amp):
                loss = loss_module(obs, tokens, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            ema.update(model)
            step += 1
            window_steps += 1
            scalars: dict[str, float] = {}
            if step % tc.log_every == 0 or step == tc.steps:
                loss_value = float(all_reduce_mean(loss.detach().float(), dist_info))
                elapsed = time.perf_counter() - window_start
                scalars = {"train/loss": loss_value, "train/lr": lr, "train/grad_norm": float(grad_norm),
                           "train/samples_per_s": window_steps * global_batch / max(elapsed, 1e-9)}  # fmt: skip
                window_start, window_steps = time.perf_counter(), 0
            if on_step is not None:
                on_step(step, float(loss.detach()))  # this process's loss: no all-reduce, no extra logging
            if dist_info.is_main:
                if data.has_validation and (step % tc.val_every == 0 or step == tc.steps):
                    scalars["val/loss"] = validation_loss(
                        ema.module, data.val_loader(), device, tc.amp, tc.val_batches
                    )
                saved = None
                if step % tc.save_every == 0 or step == tc.steps:
                    saved = save(step)
                if evaluate_every and step % evaluate_every == 0:
                    saved = saved or save(step)
                    scalars.update(
                        evaluate_in_simulation(
                            evaluator, saved, cfg.get("env"), tc.eval_episodes, run_dir / "eval"
                        )
                    )
                if scalars and metrics is not None:
                    metrics.log(step, scalars)
                if "val/loss" in scalars or saved is not None:
                    window_start = time.perf_counter()  # throughput counts training steps only
                if progress is not None:
                    progress.update(1)
                    if "train/loss" in scalars:
                        progress.set_postfix(loss=f"{scalars['train/loss']:.4f}", lr=f"{lr:.2e}",
                                             samples_s=f"{scalars['train/samples_per_s']:.1f}", refresh=False)  # fmt: skip
        barrier(dist_info)
    finally:
        if progress is not None:
            progress.close()
        if metrics is not None:
            metrics.close()
    return TrainResult(run_dir=run_dir, step=step, model=model, ema_model=ema.module)


def _progress_bar(tc: Any, step: int, dist_info: DistInfo) -> Any:
    if not (tc.progress and dist_info.is_main):
        return None
    return progress_bar(total=tc.steps, initial=step, desc="train", dynamic_ncols=True)
