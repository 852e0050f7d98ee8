"""Run any lerobot ``PreTrainedPolicy`` checkpoint through our policy protocol.

lerobot policies are stateful (``select_action`` pops from an action queue, Diffusion Policy keeps an
observation queue) and normalize through separate processor pipelines saved beside the weights.
:class:`LeRobotPolicy` hides both: ``predict_chunks(batch) -> (B, H, A)`` is stateless (the policy is
reset around every call and fed the whole observation history explicitly), and normalization uses
the checkpoint's own ``policy_preprocessor.json`` / ``policy_postprocessor.json``. ``vla eval`` and
``vla deploy`` then run it like one of ours (their ChunkExecutor does the replanning).

Batches follow docs/ARCHITECTURE.md: cameras uint8 (B, T, H, W, 3), ``observation.state`` float
(B, T, D), ``instruction`` a list of B strings (given to lerobot as ``task``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vla.interop  # noqa: F401  (switches the Hub clients offline before lerobot is imported)
from vla.devices import resolve_device
from vla.features import ACTION_KEY, INSTRUCTION_KEY, STATE_KEY
from vla.policy_spec import PolicySpec

LEROBOT_CONFIG_FILE = "config.json"
LEROBOT_WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "policy_preprocessor.json"
OBS_IMAGES = "observation.images"  # lerobot's stacked-cameras key (Diffusion Policy)
ENV_STATE_KEY = "observation.environment_state"


def is_lerobot_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a lerobot ``pretrained_model`` folder (config with a policy type + weights)."""
    path = Path(path)
    config = path / LEROBOT_CONFIG_FILE
    if not (config.is_file() and (path / LEROBOT_WEIGHTS_FILE).is_file()):
        return False
    import json

    try:
        return "type" in json.loads(config.read_text())
    except ValueError:
        return False


def _single_step_chunk(policy: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Policies that see one observation (ACT, SmolVLA, pi0...): their own ``predict_action_chunk``."""
    current = {
        k: (v[:, -1] if isinstance(v, torch.Tensor) and k in _history_keys(policy) else v)
        for k, v in batch.items()
    }
    return policy.predict_action_chunk(current)


def _diffusion_chunk(policy: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Diffusion Policy conditions on an observation history it normally keeps in queues.

    ``predict_action_chunk`` reads those queues; we build the stacked history directly instead and
    call the model's sampler, which is what the queue path ends in.
    """
    config = policy.config
    inputs = {STATE_KEY: batch[STATE_KEY]}
    if config.image_features:
        inputs[OBS_IMAGES] = torch.stack([batch[key] for key in config.image_features], dim=2)
    if config.env_state_feature:
        inputs[ENV_STATE_KEY] = batch[ENV_STATE_KEY]
    return policy.diffusion.generate_actions(inputs)


# lerobot policy type -> how to get (B, H, A) from a preprocessed batch of histories.
CHUNK_FUNCTIONS: dict[str, Callable[[Any, dict[str, Any]], torch.Tensor]] = {"diffusion": _diffusion_chunk}
# lerobot policy type -> the config field giving H of that chunk (chunk_size otherwise).
HORIZON_FIELDS: dict[str, str] = {"diffusion": "n_action_steps"}


def _history_keys(policy: Any) -> list[str]:
    return list(policy.config.input_features)


class LeRobotPolicy:
    """A lerobot policy with its processors, behind ``spec`` and stateless ``predict_chunks``."""

    def __init__(self, policy: Any, preprocessor: Any, postprocessor: Any) -> None:
        config = policy.config
        if config.type not in CHUNK_FUNCTIONS and config.n_obs_steps != 1:
            raise NotImplementedError(
                f"lerobot policy type {config.type!r} with n_obs_steps={config.n_obs_steps}: only single-step "
                f"policies and {sorted(CHUNK_FUNCTIONS)} are supported by the adapter"
            )
        self.policy = policy.eval()
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.spec = _spec_of(config)
        self.name = f"lerobot-{config.type}"
        self.device = str(config.device)

    def predict_chunks(self, batch: Mapping[str, Any]) -> np.ndarray:
        """(B, H, A) float32 actions (un-normalized) for a batch of observation histories."""
        inputs, size = self._to_lerobot(batch)
        with torch.inference_mode():
            inputs = self.preprocessor(inputs)
            self.policy.reset()  # no state survives between calls (lerobot queues, ensemblers)
            chunk = CHUNK_FUNCTIONS.get(self.policy.config.type, _single_step_chunk)(self.policy, inputs)
            chunk = self.postprocessor(chunk)
            self.policy.reset()
        chunk = chunk.detach().to("cpu", torch.float32).numpy()
        if chunk.shape[0] != size or chunk.ndim != 3:
            raise RuntimeError(
                f"lerobot policy returned actions of shape {chunk.shape} for a batch of {size}"
            )
        return chunk

    def predict_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """(H, A) for one observation: a single frame or a (T, ...) history per key."""
        batch: dict[str, Any] = {}
        for key in self._input_keys():
            if key not in observation:
                raise KeyError(f"observation lacks {key!r} (the policy reads {self._input_keys()})")
            value = np.asarray(observation[key])
            single_frame = value.ndim == len(self._frame_shape(key))
            batch[key] = value[None, None] if single_frame else value[None]
        batch[INSTRUCTION_KEY] = [str(observation.get(INSTRUCTION_KEY, ""))]
        return self.predict_chunks(batch)[0]

    def _input_keys(self) -> list[str]:
        return list(self.policy.config.input_features)

    def _frame_shape(self, key: str) -> tuple[int, ...]:
        shape = tuple(self.policy.config.input_features[key].shape)
        return (shape[1], shape[2], shape[0]) if key in self.policy.config.image_features else shape

    def _to_lerobot(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """Our (B, T, ...) numpy batch -> lerobot tensors: images float CHW in [0, 1], T cut/padded."""
        n_obs = int(self.policy.config.n_obs_steps)
        inputs: dict[str, Any] = {}
        size = None
        for key in self._input_keys():
            if key not in batch:
                raise KeyError(f"batch lacks {key!r}; the lerobot policy reads {self._input_keys()}")
            value = np.asarray(batch[key])
            expected = self._frame_shape(key)
            if value.ndim != 2 + len(expected) or tuple(value.shape[2:]) != expected:
                raise ValueError(f"batch[{key!r}] has shape {value.shape}, expected (B, T, *{expected})")
            if size is not None and value.shape[0] != size:
                raise ValueError(f"batch[{key!r}] has batch size {value.shape[0]}, other keys {size}")
            size = value.shape[0]
            value = _fit_history(value, n_obs)
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            if key in self.policy.config.image_features:
                if tensor.dtype != torch.uint8:
                    raise ValueError(f"batch[{key!r}] must be uint8 images, got {tensor.dtype}")
                tensor = tensor.permute(0, 1, 4, 2, 3).float().div_(255.0)
            else:
                tensor = tensor.float()
                if not torch.isfinite(tensor).all():
                    raise ValueError(f"batch[{key!r}] contains NaN or infinite values")
            inputs[key] = tensor
        if size is None:
            raise ValueError("the lerobot policy declares no input features")
        instructions = batch.get(INSTRUCTION_KEY, [""] * size)
        if len(instructions) != size:
            raise ValueError(f"{len(instructions)} instructions for a batch of {size}")
        inputs["task"] = [str(text) for text in instructions]
        return inputs, size


def _fit_history(value: np.ndarray, n_obs: int) -> np.ndarray:
    """Keep the last ``n_obs`` frames; repeat the first frame when fewer are given (lerobot's rule)."""
    steps = value.shape[1]
    if steps >= n_obs:
        return value[:, steps - n_obs :]
    pad = np.repeat(value[:, :1], n_obs - steps, axis=1)
    return np.concatenate([pad, value], axis=1)


def _spec_of(config: Any) -> PolicySpec:
    """Our PolicySpec from a lerobot config (names and fps live in the dataset, not the policy)."""
    cameras = tuple(config.image_features)
    image_shape = (0, 0, 3)  # no camera: nothing to check
    if cameras:
        shapes = {tuple(config.input_features[key].shape) for key in cameras}
        if len(shapes) != 1:
            raise NotImplementedError(
                f"lerobot policy cameras of different shapes {shapes}: PolicySpec has one image shape"
            )
        c, h, w = shapes.pop()
        image_shape = (int(h), int(w), int(c))
    state = config.input_features.get(STATE_KEY)
    return PolicySpec(
        camera_keys=cameras,
        image_shape=image_shape,
        state_dim=int(state.shape[0]) if state is not None else 0,
        action_dim=int(config.output_features[ACTION_KEY].shape[0]),
        n_obs_steps=int(config.n_obs_steps),
        chunk_size=int(getattr(config, HORIZON_FIELDS.get(config.type, "chunk_size"))),
    )


def load_lerobot_policy(checkpoint_dir: str | Path, device: str = "auto") -> LeRobotPolicy:
    """Load a lerobot ``pretrained_model`` folder (weights, config, processors) from local disk only."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"lerobot checkpoint folder {path} does not exist (the Hub is never queried)")
    if not is_lerobot_checkpoint(path):
        raise FileNotFoundError(
            f"{path} is not a lerobot checkpoint: it needs {LEROBOT_CONFIG_FILE} "
            f"(with a policy type) and {LEROBOT_WEIGHTS_FILE}"
        )
    if not (path / PREPROCESSOR_FILE).is_file():
        raise FileNotFoundError(
            f"{path} lacks {PREPROCESSOR_FILE}: without the saved processors the "
            "checkpoint's normalization statistics are unknown"
        )
    device = str(resolve_device(device))
    config = PreTrainedConfig.from_pretrained(path)
    config.device = device
    if hasattr(config, "pretrained_backbone_weights"):
        config.pretrained_backbone_weights = None  # the checkpoint holds the trained backbone; no download
    policy = get_policy_class(config.type).from_pretrained(path, config=config)
    policy.to(device)
    preprocessor, postprocessor = make_pre_post_processors(
        config, pretrained_path=str(path), preprocessor_overrides={"device_processor": {"device": device}}
    )
    return LeRobotPolicy(policy, preprocessor, postprocessor)
