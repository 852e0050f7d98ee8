"""lerobot policies through our protocol, and lerobot's training pieces on a converted store."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub, even from lerobot's imports
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lerobot", reason="the lerobot extra is not installed")

from vla.features import INSTRUCTION_KEY, STATE_KEY, camera_key
from vla.interop.lerobot_policy import is_lerobot_checkpoint, load_lerobot_policy
from vla.interop.synthetic import write_lerobot_dataset

REPO = "local/policy_test"
FRONT = camera_key("front")


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lerobot") / "dataset"
    write_lerobot_dataset(root, REPO, num_episodes=2, length=20, image_size=32, state_dim=5, action_dim=4)
    return root


def _train_one_step_and_save(policy_cfg, root: Path, out: Path) -> float:
    """lerobot's own pieces, as lerobot-train wires them: policy from the dataset's features, its
    processors from the dataset's statistics, windows from the policy's delta timestamps."""
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    torch.manual_seed(0)
    meta = LeRobotDatasetMetadata(REPO, root=root)
    policy = make_policy(policy_cfg, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(policy_cfg, dataset_stats=meta.stats)
    dataset = LeRobotDataset(
        REPO, root=root, delta_timestamps=resolve_delta_timestamps(policy_cfg, meta), video_backend="pyav"
    )
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)))
    policy.train()
    loss, _ = policy.forward(preprocessor(batch))
    loss.backward()
    for component in (policy, preprocessor, postprocessor):
        component.save_pretrained(out)
    return loss.item()


def _batch(size: int, steps: int, rng: np.random.Generator) -> dict:
    return {
        FRONT: rng.integers(0, 256, size=(size, steps, 32, 32, 3), dtype=np.uint8),
        STATE_KEY: rng.normal(size=(size, steps, 5)).astype(np.float32),
        "observation.extra_sensor": np.zeros((size, steps, 2), np.float32),  # ignored: not a policy input
        INSTRUCTION_KEY: ["pick up the red cube"] * size,
    }


def test_act_checkpoint_runs_through_the_protocol(dataset_root, tmp_path):
    from lerobot.policies.act.configuration_act import ACTConfig

    config = ACTConfig(
        pretrained_backbone_weights=None,
        chunk_size=10,
        n_action_steps=10,
        dim_model=64,
        n_heads=2,
        dim_feedforward=128,
        n_encoder_layers=1,
        n_decoder_layers=1,
        device="cpu",
        push_to_hub=False,
    )
    loss = _train_one_step_and_save(config, dataset_root, tmp_path / "act")
    assert np.isfinite(loss)
    assert is_lerobot_checkpoint(tmp_path / "act") and not is_lerobot_checkpoint(dataset_root)

    policy = load_lerobot_policy(tmp_path / "act", device="cpu")
    assert policy.spec.camera_keys == (FRONT,) and policy.spec.image_shape == (32, 32, 3)
    assert (policy.spec.state_dim, policy.spec.action_dim, policy.spec.chunk_size) == (5, 4, 10)

    batch = _batch(3, 2, np.random.default_rng(0))
    chunks = policy.predict_chunks(batch)
    assert chunks.shape == (3, 10, 4) and chunks.dtype == np.float32 and np.isfinite(chunks).all()
    # Stateless: lerobot's action queue never leaks between calls, and each row depends on its own input.
    np.testing.assert_allclose(policy.predict_chunks(batch), chunks, rtol=1e-5, atol=1e-5)
    single = policy.predict_chunk(
        {
            FRONT: batch[FRONT][1, -1],
            STATE_KEY: batch[STATE_KEY][1, -1],
            INSTRUCTION_KEY: "pick up the red cube",
        }
    )
    np.testing.assert_allclose(single, chunks[1], rtol=1e-4, atol=1e-4)

    with pytest.raises(KeyError, match=STATE_KEY):
        policy.predict_chunks({k: v for k, v in batch.items() if k != STATE_KEY})
    with pytest.raises(ValueError, match=FRONT):
        policy.predict_chunks({**batch, FRONT: batch[FRONT][:, :, :16]})
    bad_state = batch[STATE_KEY].copy()
    bad_state[0, -1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_chunks({**batch, STATE_KEY: bad_state})


def test_diffusion_checkpoint_uses_the_observation_history(dataset_root, tmp_path):
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    config = DiffusionConfig(
        n_obs_steps=2,
        horizon=8,
        n_action_steps=4,
        drop_n_last_frames=3,
        down_dims=(32, 64),
        diffusion_step_embed_dim=32,
        spatial_softmax_num_keypoints=8,
        crop_shape=(28, 28),
        num_train_timesteps=10,
        num_inference_steps=2,
        device="cpu",
        push_to_hub=False,
    )
    _train_one_step_and_save(config, dataset_root, tmp_path / "diffusion")
    policy = load_lerobot_policy(tmp_path / "diffusion", device="cpu")
    assert policy.spec.n_obs_steps == 2 and policy.spec.chunk_size == 4

    chunks = policy.predict_chunks(_batch(2, 2, np.random.default_rng(1)))
    assert chunks.shape == (2, 4, 4) and np.isfinite(chunks).all()
    # A one-frame history is padded by repeating the first frame, as lerobot's own queues do.
    assert policy.predict_chunks(_batch(2, 1, np.random.default_rng(2))).shape == (2, 4, 4)


def test_loading_refuses_what_is_not_a_local_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="never queried"):
        load_lerobot_policy(tmp_path / "lerobot/act_aloha_sim")  # looks like a hub id: not fetched
    (tmp_path / "config.json").write_text('{"type": "act"}')
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_lerobot_policy(tmp_path)
