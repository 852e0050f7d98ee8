"""Load a trained checkpoint and turn observations into actions.

``load_policy(checkpoint_dir)`` reads the checkpoint written by ``vla train`` (EMA weights,
normalization statistics, tokenizers, spec) and returns a :class:`Policy`:

- :meth:`Policy.predict_chunks`: batched (B, T, ...) -> action chunks (B, H, A), stateless but for
  the flow head's noise generator (``flow_noise``);
- :meth:`Policy.predict_chunk`: one observation (single frame or (T, ...) history) -> (H, A);
- :meth:`Policy.reset` / :meth:`Policy.act`: the stateful per-step loop, built on
  :class:`~vla.policies.executor.ChunkExecutor`, keeping the last ``n_obs_steps`` observations.

Observations are normalized with the checkpoint's statistics and actions un-normalized with them,
always; inputs are checked at the boundary (:mod:`vla.policy_spec`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla import checkpoint as ckpt
from vla.checkpoint_guard import check_weights_fit
from vla.devices import resolve_device
from vla.features import ACTION_KEY, INSTRUCTION_KEY, STATE_KEY
from vla.inputs import encode_text, model_state, to_model_inputs
from vla.model.inference_weights import PRECISIONS, check_precision
from vla.normalization import Normalizer
from vla.policies.executor import ChunkExecutor
from vla.policy_spec import TIMESTAMP_KEY, ObservationError, PolicySpec, check_batch, replan_interval


class Policy:
    """A trained VLA ready for inference; create it with :func:`load_policy`."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: PolicySpec,
        normalizer: Normalizer,
        action_tokenizer: Any,
        text_tokenizer: Any,
        *,
        device: torch.device,
        replan_every: int | None = None,
        temporal_ensemble: float | None = None,
        max_age_s: float | None = None,
        precision: str = "auto",
        flow_noise: str = "fresh",
        noise_seed: int = 0,
        flow_noise_scale: float = 1.0,
        flow_steps: int | None = None,
    ) -> None:
        if flow_noise not in FLOW_NOISE:
            raise ValueError(f"flow_noise must be one of {list(FLOW_NOISE)}, got {flow_noise!r}")
        if not (math.isfinite(flow_noise_scale) and flow_noise_scale >= 0.0):
            raise ValueError(f"flow_noise_scale must be a finite number >= 0, got {flow_noise_scale!r}")
        self.flow_steps = _checked_flow_steps(flow_steps, model.config)
        self.model = model.eval()
        self.flow_noise = flow_noise
        self.flow_noise_scale = float(flow_noise_scale)
        # Fresh noise comes from one generator seeded here, so a rerun with the same settings (the
        # same episodes batched the same way) draws the same noise.
        self._noise = (
            torch.Generator(device=device).manual_seed(noise_seed)
            if flow_noise == "fresh" and model.config.action_head == "flow"
            else None
        )
        self.precision = resolve_precision(precision, device)
        self.spec = spec
        self.normalizer = normalizer
        self.action_tokenizer = action_tokenizer
        self.text_tokenizer = text_tokenizer
        self.device = device
        self.max_age_s = max_age_s
        self.decode_errors = 0  # chunks the action tokenizer had to repair or reject
        self.executor = ChunkExecutor(
            replan_every=replan_every or replan_interval(spec),
            temporal_ensemble=temporal_ensemble,
        )
        self._instruction: str | None = None
        self._history: deque[dict[str, np.ndarray]] = deque(maxlen=spec.n_obs_steps)

    # -- stateless ----------------------------------------------------------------------------
    def instruction_as_read(self, instruction: str) -> str:
        """The words of ``instruction`` the model reads: the known ones, or those of the training
        instruction it grounds to (:mod:`vla.model.instruction_grounding`); for logs and reports."""
        tokens, is_pad = self.text_tokenizer.encode([instruction], self.model.config.max_text_len)
        return self.text_tokenizer.decode(tokens[0][~is_pad[0]].tolist())

    @torch.inference_mode()
    def predict_chunks(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Observation batch with leading (B, T) + ``instruction`` (list of B str) -> actions (B, H, A).

        T may be 1..n_obs_steps (shorter histories are padded by repeating their oldest frame and
        marked as padding, as in training; longer ones keep the newest frames). A chunk the action
        tokenizer cannot decode comes back as NaN rows and is counted in :attr:`decode_errors`.
        """
        arrays, instructions = check_batch(
            batch, self.spec.camera_keys, self.spec.image_shape, self.spec.state_dim, self.max_age_s
        )
        arrays, obs_is_pad = _fit_history(arrays, self.spec.n_obs_steps)
        images = np.stack([arrays[k] for k in self.spec.camera_keys], axis=2)  # (B, T, N, H, W, 3)
        state = model_state(self.normalizer, arrays[STATE_KEY], self.spec.state_indices)
        prepared = {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "state": torch.from_numpy(state),
            "obs_is_pad": torch.from_numpy(obs_is_pad),
            **encode_text(self.text_tokenizer, instructions, self.model.config.max_text_len),
        }
        obs = to_model_inputs(prepared, self.device)
        options = self.action_tokenizer.generation_options()  # token heads: greedy
        if self._noise is not None:
            options = {**options, "generator": self._noise}
        if self.model.config.action_head == "flow":
            options = {**options, "noise_scale": self.flow_noise_scale, "flow_steps": self.flow_steps}
        with _autocast(self.device, self.precision):
            predicted = self.model.generate(obs, options, precision=self.precision)
        normalized, report = self.action_tokenizer.decode(predicted.cpu())
        self.decode_errors += int(report.repaired) + len(report.rejected)
        actions = self.normalizer.unnormalize(ACTION_KEY, normalized.astype(np.float32))
        return np.asarray(actions, dtype=np.float32)

    def predict_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One observation (single-frame values, or (T, ...) histories) -> one chunk (H, A)."""
        return self.predict_chunks(self._as_batch(observation))[0]

    def _as_batch(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(observation, Mapping):
            raise ObservationError("<observation>", f"expected a dict, got {type(observation).__name__}")
        batch: dict[str, Any] = {}
        for key in (*self.spec.camera_keys, STATE_KEY):
            if key not in observation:
                raise ObservationError(key, "missing")
            value = np.asarray(observation[key])
            frame_ndim = 3 if key in self.spec.camera_keys else 1
            if value.ndim == frame_ndim:
                value = value[None]  # a single frame
            batch[key] = value[None]
        instruction = observation.get(INSTRUCTION_KEY, self._instruction)
        if instruction is None:
            raise ObservationError(
                INSTRUCTION_KEY, "missing (give it in the observation, or call reset(instruction))"
            )
        batch[INSTRUCTION_KEY] = [instruction]  # one observation, one instruction (checked downstream)
        if TIMESTAMP_KEY in observation:
            batch[TIMESTAMP_KEY] = np.asarray(observation[TIMESTAMP_KEY], dtype=np.float64).reshape(1, -1)
        return batch

    # -- stateful -----------------------------------------------------------------------------
    def reset(self, instruction: str) -> None:
        """Start an episode: forget the history and pending actions, remember ``instruction``."""
        if not isinstance(instruction, str):
            raise TypeError(f"the instruction must be a str, got {type(instruction).__name__}")
        self._instruction = instruction
        self._history.clear()
        self.executor.reset()

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The action (A,) for this control step (a new chunk is predicted when the executor needs one)."""
        if self._instruction is None:
            raise RuntimeError(
                "Policy.act() called before Policy.reset(instruction): call reset() at the start of each episode"
            )
        keys = (*self.spec.camera_keys, STATE_KEY)
        batch_one = self._as_batch({**observation, INSTRUCTION_KEY: self._instruction})
        # Every frame is checked as it arrives, even when no new chunk is due, so a bad frame never
        # hides in the history.
        arrays, _ = check_batch(
            batch_one, self.spec.camera_keys, self.spec.image_shape, self.spec.state_dim, self.max_age_s
        )
        self._history.append({k: arrays[k][0, -1] for k in keys})
        if self.executor.needs_chunk():
            history = {k: np.stack([h[k] for h in self._history]) for k in keys}
            chunk = self.predict_chunk({**history, INSTRUCTION_KEY: self._instruction})
            if not np.isfinite(chunk).all():
                raise RuntimeError(
                    "the predicted action chunk could not be decoded (see Policy.decode_errors)"
                )
            self.executor.push_chunk(chunk)
        return self.executor.next_action()


def _fit_history(arrays: dict[str, np.ndarray], n_obs_steps: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Bring every (B, T, ...) array to T = n_obs_steps; return the (B, T) padding mask."""
    batch, steps = next(iter(arrays.values())).shape[:2]
    if steps >= n_obs_steps:
        return {k: v[:, steps - n_obs_steps :] for k, v in arrays.items()}, np.zeros(
            (batch, n_obs_steps), dtype=bool
        )
    missing = n_obs_steps - steps
    padded = {k: np.concatenate([np.repeat(v[:, :1], missing, axis=1), v], axis=1) for k, v in arrays.items()}
    is_pad = np.zeros((batch, n_obs_steps), dtype=bool)
    is_pad[:, :missing] = True
    return padded, is_pad


PRECISION_CHOICES = ("auto", *PRECISIONS)

# Where the flow head's sampler starts each chunk: ``fresh`` noise per chunk (the default) or the
# ``fixed`` noise of seed 0 every time. Measured on the tabletop suite (README, rows 28, 28b): with fixed
# noise one run placed and stacked 0 of 60 times, hovering over the plate or the lower block; with
# fresh noise the same weights did 52 of 60.
FLOW_NOISE = ("fresh", "fixed")


def _checked_flow_steps(flow_steps: int | None, config: Any) -> int | None:
    """The Euler steps a flow-head policy samples with (``None``: any other head); an override
    other than the checkpoint's ``flow_steps`` is the latency knob, so a bad one names the problem."""
    if config.action_head != "flow":
        if flow_steps is not None:
            raise ValueError(
                f"flow_steps applies to flow-head checkpoints; this one's head is {config.action_head!r}"
            )
        return None
    if flow_steps is None:
        return int(config.flow_steps)
    if isinstance(flow_steps, bool) or not isinstance(flow_steps, int) or flow_steps < 1:
        raise ValueError(f"flow_steps must be an integer >= 1, got {flow_steps!r}")
    return flow_steps


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``fp32`` (on CUDA that runs under bf16 autocast, as training does); the others
    are :data:`vla.model.inference_weights.PRECISIONS`, checked against ``device``."""
    if precision == "auto":
        return "fp32"
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {list(PRECISION_CHOICES)}, got {precision!r}")
    check_precision(precision, device)
    return precision


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA for fp32 weights (as in training); nothing else is autocast."""
    if device.type == "cuda" and precision == "fp32":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class PolicyDocuments:
    """What a checkpoint's (or an export's) JSON documents describe, parsed."""

    spec: PolicySpec
    model_config: Any  # vla.model.model.VLAConfig
    normalizer: Normalizer
    action_tokenizer: Any
    text_tokenizer: Any


def read_policy_documents(
    path: Path, what: str, trusted_files: Sequence[str | os.PathLike[str]] = ()
) -> PolicyDocuments:
    """Parse the spec, model config, statistics and tokenizers stored in ``path``.

    ``what`` names the source in errors ("checkpoint <dir>", "export <dir>"). Files the model config
    names must lie inside ``path`` or be among ``trusted_files`` (:func:`vla.checkpoint.load_documents`).
    """
    from vla.model.action_tokenizers import action_tokenizer_from_state_dict
    from vla.model.model import VLAConfig
    from vla.model.text_tokenizer import TextTokenizer

    documents = ckpt.load_documents(path, tuple(trusted_files))
    try:
        return PolicyDocuments(
            spec=PolicySpec.from_dict(documents["policy"]),
            model_config=VLAConfig.from_dict(dict(documents["config"]["model"])),
            normalizer=Normalizer.from_dict(documents["normalization"]),
            action_tokenizer=action_tokenizer_from_state_dict(documents["action_tokenizer"]),
            text_tokenizer=TextTokenizer.from_dict(documents["text_tokenizer"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ckpt.CheckpointError(f"{what} has malformed metadata: {exc!r}") from exc


def load_policy(
    checkpoint_dir: str | os.PathLike[str],
    device: str = "auto",
    *,
    replan_every: int | None = None,
    temporal_ensemble: float | None = None,
    max_age_s: float | None = None,
    use_ema: bool = True,
    precision: str = "auto",
    flow_noise: str = "fresh",
    noise_seed: int = 0,
    flow_noise_scale: float = 1.0,
    flow_steps: int | None = None,
    trusted_files: Sequence[str | os.PathLike[str]] = (),
) -> Policy:
    """Load a checkpoint (or a run directory: its latest checkpoint) as a :class:`Policy`.

    ``device="auto"`` picks CUDA when available. ``replan_every`` (default: the policy's own, else its chunk size) and
    ``temporal_ensemble`` configure :meth:`Policy.act`; ``max_age_s`` refuses observations whose
    ``timestamp`` is older. ``use_ema=False`` loads the raw training weights instead of the EMA ones.
    ``precision`` picks the inference weights: ``auto`` (fp32; bf16 autocast on CUDA), ``fp32``,
    ``bf16``, or ``int8`` (CPU: bf16 prefix, int8 weight-only decode steps; see
    :mod:`vla.model.inference_weights` and the README's model benchmark for speed and agreement).
    ``flow_noise`` (flow head): ``fresh`` draws new starting noise for every chunk from a generator
    seeded with ``noise_seed``; ``fixed`` starts every chunk from the same noise (the exported
    policy's behaviour). Why fresh: from the same noise the sampler is a fixed function of the
    observation, and a policy that hovers where the expert paused (above the plate, before the
    release) hovers there forever; new noise lets it leave (see :data:`FLOW_NOISE`).
    ``flow_noise_scale`` multiplies that starting noise (the sampler's temperature): 1 is the
    distribution the head was trained from, 0 starts every chunk at zero (deterministic).
    ``flow_steps`` (flow head): Euler steps per chunk instead of the checkpoint's own (fewer: less
    latency; the README's action-head section gives success against steps).
    ``trusted_files``: files outside the checkpoint its config may name (given explicitly by the
    user); anything else a checkpoint names outside itself, or sizes its weights do not have, raise
    :class:`~vla.checkpoint.CheckpointError` before any model is built.
    """
    from vla.model.model import VLA

    path = ckpt.resolve_checkpoint(checkpoint_dir)
    ckpt.check_complete(path)
    parts = read_policy_documents(path, f"checkpoint {path}", trusted_files)
    spec, model_config, normalizer = parts.spec, parts.model_config, parts.normalizer
    action_tokenizer, text_tokenizer = parts.action_tokenizer, parts.text_tokenizer
    for key, dim in ((STATE_KEY, spec.state_dim), (ACTION_KEY, spec.action_dim)):
        if normalizer.dim(key) != dim:
            raise ckpt.CheckpointError(
                f"checkpoint {path}: statistics of {key!r} have {normalizer.dim(key)} dims, spec says {dim}"
            )
    torch_device = resolve_device(device)
    weights = path / (ckpt.EMA_FILE if use_ema else ckpt.MODEL_FILE)
    check_weights_fit(lambda: VLA(model_config), weights, model_config, f"checkpoint {path}")
    model = VLA(model_config)
    ckpt.load_weights(model, weights)
    model.to(torch_device)
    return Policy(
        model, spec, normalizer, action_tokenizer, text_tokenizer, device=torch_device,
        replan_every=replan_every, temporal_ensemble=temporal_ensemble, max_age_s=max_age_s,
        precision=precision, flow_noise=flow_noise, noise_seed=noise_seed, flow_noise_scale=flow_noise_scale,
        flow_steps=flow_steps,
    )  # fmt: skip
