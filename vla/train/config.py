"""The ``train:`` settings of a run, with defaults for every key.

They come from the policy file's ``train:`` section, which is the run's top-level ``train`` (what
``vla train ... train.steps=200`` overrides, see :mod:`vla.config`). Unknown keys are an error so a
typo never trains silently with a default. The model's ``horizon`` and ``n_obs_steps`` are set in
the policy's ``model:`` section only (``policy.model.horizon=...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """Everything the training loop reads; see the policy YAML files for typical values."""

    steps: int = 1000
    batch_size: int = 32  # per process
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA (the raw weights are then also the "EMA")
    val_fraction: float = 0.1
    val_batches: int = 8
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    eval_every: int = 0  # simulation evaluation every N steps (0: never)
    eval_episodes: int = 10
    save_every: int = 500
    keep_last: int = 3
    num_workers: int = 2
    # torch.compile the loss (2-core CPU: 1.3-1.8x the eager steps/s of tiny128, ~1 min to compile).
    compile: bool = False
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    tokenizer_fit_windows: int = 4096  # action windows used to fit the action tokenizer
    progress: bool = True  # tqdm bar on rank 0
    augment_shift: int = 0  # random image shift in pixels (vla.train.augment); 0 disables
    in_memory: bool = False  # load the store's frames into RAM once (stores that fit), read no storage chunks
    # Sample order (vla.data.loader.SAMPLE_ORDERS): "chunks" keeps storage locality (neighbouring frames
    # share decoded storage chunks: fast reads of large stores); "uniform" draws every batch from the
    # whole training set (more diverse batches; pair it with in_memory); "tasks" draws every task
    # equally often whatever its episodes' lengths (multi-task stores with short and long tasks).
    order: str = "chunks"
    # A curriculum: the first curriculum_steps steps draw only windows of the tasks matching
    # curriculum_tasks (fnmatch patterns over "<env id>/<task>", e.g. "*reach-*"), then `order` takes
    # over. Measured: started on reach, a reach + press + pick policy reads the colour word; started on
    # every task, it never does (vla.data.loader.curriculum_order).
    curriculum_tasks: tuple[str, ...] = ()
    curriculum_steps: int = 0
    # With order "tasks": a task's share of the draws in proportion to the weight of the first
    # pattern (fnmatch over "<env id>/<task>") that matches it, 1.0 when none does, e.g.
    # {"*press-*": 2.0} draws each press task twice as often as each other task.
    task_weights: dict[str, float] = field(default_factory=dict)
    # Word dropout: each word of a training instruction is hidden from the model with this
    # probability, unless the words left would also fit another task's instruction
    # (vla.train.augment.WordDropout). Unknown words are hidden the same way at inference.
    word_dropout: float = 0.0

    @classmethod
    def from_sections(cls, *sections: Mapping[str, Any] | None) -> tuple[TrainConfig, list[str]]:
        """Merge ``sections`` (later wins) over the defaults; also return the keys left at their default."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for section in sections:
            for key, value in (section or {}).items():
                if key not in known:
                    raise ValueError(f"unknown train setting {key!r}; known: {sorted(known)}")
                values[key] = value
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        if "task_weights" in values:
            values["task_weights"] = {str(k): float(v) for k, v in (values["task_weights"] or {}).items()}
        if "curriculum_tasks" in values:
            values["curriculum_tasks"] = tuple(str(t) for t in values["curriculum_tasks"] or ())
        config = cls(**values)
        config.validate()
        return config, sorted(set(known) - set(values))

    def validate(self) -> None:
        """Refuse values the loop cannot honour, naming the key."""
        positive = ("steps", "batch_size", "log_every", "val_every", "save_every", "keep_last")
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        from vla.data.loader import SAMPLE_ORDERS  # the loader owns the orders (imports torch: lazily)

        if self.order not in SAMPLE_ORDERS:
            raise ValueError(f"train.order must be one of {list(SAMPLE_ORDERS)}, got {self.order!r}")
        if self.curriculum_steps < 0 or (self.curriculum_steps > 0 and not self.curriculum_tasks):
            raise ValueError(
                f"train.curriculum_steps must be >= 0 and, when > 0, needs train.curriculum_tasks; got "
                f"{self.curriculum_steps} with {list(self.curriculum_tasks)}"
            )
        if self.task_weights and self.order != "tasks":
            raise ValueError(f"train.task_weights need train.order=tasks, got train.order={self.order!r}")
        if any(not (w >= 0 and w < float("inf")) for w in self.task_weights.values()):
            raise ValueError(f"train.task_weights must be finite and >= 0, got {self.task_weights}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"train.word_dropout must be in [0, 1), got {self.word_dropout}")
        if self.warmup_steps < 0 or self.num_workers < 0 or self.eval_every < 0:
            raise ValueError("train.warmup_steps, train.num_workers and train.eval_every must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["curriculum_tasks"] = list(self.curriculum_tasks)
        data["task_weights"] = dict(self.task_weights)
        return data
