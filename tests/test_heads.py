"""Action heads (ar_bins, ar_fast, l1, flow) and the keypoint vision encoder: masks, the one decoder
(cached = uncached, static = eager, every precision), learning, determinism and input errors."""

from __future__ import annotations

import pytest
import torch
from test_model import make_obs, small_config

from vla.model.decoding import DecodeOptions, flow_noise
from vla.model.model import VLA, VLAConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CONTINUOUS = ("l1", "flow")


def config_for(head: str, **overrides) -> VLAConfig:
    """test_model's small config with ``head`` (and a short flow sampler)."""
    return small_config(**{"action_head": head, "flow_steps": 4, **overrides})


def obs_for(config: VLAConfig, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """test_model's observations, with one padded instruction row and one padded timestep."""
    obs = make_obs(config, batch, seed)
    obs["text_is_pad"][0, 4:] = True  # one row with padding, so masks matter
    obs["obs_is_pad"][1, 0] = True
    return obs


def targets_for(config: VLAConfig, batch: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if config.continuous_actions:
        return torch.rand(batch, config.horizon, config.action_dim, generator=g) * 2 - 1
    return torch.randint(0, config.action_vocab_size, (batch, config.max_action_tokens), generator=g)


def trained_like(model: VLA, seed: int = 5) -> VLA:
    """Random weights everywhere (zero-initialized maps too), as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("head", CONTINUOUS)
def test_continuous_action_tokens_see_each_other_and_the_prefix_never_sees_them(head):
    config = config_for(head)
    model = trained_like(VLA(config))
    obs = obs_for(config)
    inputs = torch.randn(3, config.horizon, config.n_embd)
    before, P = model.run(obs, inputs)
    changed = inputs.clone()
    changed[:, -1] += torch.randn(config.n_embd)  # only the last action token's input changes
    after, _ = model.run(obs, changed)
    torch.testing.assert_close(after[:, :P], before[:, :P])  # the prefix never attends to actions
    assert not torch.allclose(after[:, P], before[:, P])  # the first action token sees the last one


@pytest.mark.parametrize("head", ["ar_bins", *CONTINUOUS])
@pytest.mark.parametrize("encoder", ["conv", "keypoints"])
def test_cached_decoding_equals_uncached_and_static_equals_eager(head, encoder):
    extra = {"vision_encoder": encoder, "film": True}
    if encoder == "keypoints":
        extra |= {"patch_size": 4, "keypoints": 5}
    config = config_for(head, **extra)
    model = trained_like(VLA(config))
    obs = obs_for(config)
    cached = model.generate(obs)
    plain = model.generate(obs, use_cache=False)
    static = model.generate(obs, DecodeOptions(static=True))
    if head in CONTINUOUS:
        assert cached.shape == (3, config.horizon, config.action_dim) and cached.dtype == torch.float32
        torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cached, static, atol=1e-5, rtol=1e-4)
    else:
        assert torch.equal(cached, plain) and torch.equal(cached, static)


@pytest.mark.parametrize("head", CONTINUOUS)
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_continuous_chunks_stay_close_to_fp32(head, precision):
    config = config_for(head)
    model = trained_like(VLA(config))
    obs = obs_for(config)
    reference = model.generate(obs)
    low = model.generate(obs, precision=precision)
    assert low.dtype == torch.float32
    # bf16 keeps ~3 significant digits; a few of them accumulate over layers and flow steps.
    assert (low - reference).abs().max() < 0.05 * max(1.0, float(reference.abs().max()))
    torch.testing.assert_close(
        model.generate(obs, precision=precision, use_cache=False), low, atol=2e-2, rtol=0
    )


def test_flow_sampling_is_deterministic_per_row_and_seeded_sampling_differs():
    config = config_for("flow")
    model = trained_like(VLA(config))
    obs = obs_for(config)
    together = model.generate(obs)
    alone = model.generate({k: v[1:2] for k, v in obs.items()})
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=1e-4)  # no dependence on the batch
    assert torch.equal(model.generate(obs), together)
    sampled = model.generate(obs, DecodeOptions(generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(sampled, together)
    assert flow_noise(4, 3, 0).shape == (4, 3) and (flow_noise(4, 3, 0) == flow_noise(4, 3, 0)).all()
    more_steps = model.generate(obs, DecodeOptions(flow_steps=8))
    assert not torch.allclose(more_steps, together)
    # noise_scale=0: every chunk starts at zero, whatever the generator draws.
    cold = [model.generate(obs, DecodeOptions(generator=torch.Generator().manual_seed(s), noise_scale=0.0))
            for s in (0, 1)]  # fmt: skip
    assert torch.equal(cold[0], cold[1]) and not torch.allclose(cold[0], together)
    half = model.generate(obs, DecodeOptions(generator=torch.Generator().manual_seed(0), noise_scale=0.5))
    assert not torch.allclose(half, sampled) and not torch.allclose(half, cold[0])


@pytest.mark.parametrize("head", CONTINUOUS)
def test_continuous_heads_learn_a_chunk_per_instruction(head):
    torch.manual_seed(0)
    config = config_for(head, n_embd=48, n_head=4, flow_steps=10)
    model = VLA(config)
    obs = obs_for(config, batch=4, seed=2)
    targets = targets_for(config, batch=4, seed=3) * 0.8
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300 if head == "flow" else 150):
        loss = model.loss(obs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predicted = model.eval().generate(obs)
    error = (predicted - targets).abs().mean()
    assert error < (0.12 if head == "flow" else 0.05), f"{head}: mean error {error:.3f}"


def test_step_mask_counts_only_the_masked_steps():
    config = config_for("l1")
    model = trained_like(VLA(config))
    obs, targets = obs_for(config), targets_for(config)
    mask = torch.ones(3, config.horizon, dtype=torch.bool)
    mask[:, 2:] = False
    changed = targets.clone()
    changed[:, 2:] += 0.5
    torch.testing.assert_close(model.loss(obs, targets, mask), model.loss(obs, changed, mask))
    assert not torch.allclose(model.loss(obs, targets), model.loss(obs, changed))


def test_keypoint_encoder_finds_a_bright_spot():
    """With its map set to 'brightness', a keypoint's coordinates are where the bright spot is."""
    config = config_for(
        "l1", vision_encoder="keypoints", patch_size=4, keypoints=1, image_size=32, film=False
    )
    model = VLA(config)
    encoder = model.vision
    assert encoder.num_tokens == 1
    with torch.no_grad():
        # A stem whose every stage passes a positive blob through, and a map that scores it.
        for conv in encoder.stem.convs:
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, 1, 1] = 1.0
        encoder.keys.weight.zero_()
        encoder.keys.bias.zero_()
        encoder.keys.weight[0] = 1.0  # key dimension 0: the summed features of a cell
        encoder.queries.zero_()
        encoder.queries[:, 0] = 1.0
        encoder.temperature.fill_(3.0)
        captured: dict[str, torch.Tensor] = {}

        def keep_coordinates(module, inputs, output) -> None:
            captured["xy"] = inputs[0][..., :2]

        encoder.proj.register_forward_hook(keep_coordinates)
        for row, col in ((4, 24), (20, 8)):
            images = torch.zeros(1, 3, 32, 32)
            images[..., row - 2 : row + 2, col - 2 : col + 2] = 1.0
            captured.clear()
            encoder(images)
            x, y = captured["xy"][0, 0].tolist()
            assert abs(x - (col / 32 * 2 - 1)) < 0.2 and abs(y - (row / 32 * 2 - 1)) < 0.2, (x, y)


def test_head_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown action_head 'diffusion'"):
        config_for("diffusion")
    with pytest.raises(ValueError, match="flow_steps"):
        config_for("flow", flow_steps=0)
    with pytest.raises(ValueError, match="keypoints >= 1"):
        VLA(config_for("l1", vision_encoder="keypoints", patch_size=4))
    model = VLA(config_for("l1"))
    obs = obs_for(model.config)
    with pytest.raises(ValueError, match=r"expects \(B, 4, 3\) float"):
        model.loss(obs, torch.zeros(3, 12, dtype=torch.long))
    with pytest.raises(TypeError, match="has none"):
        model(obs, torch.zeros(3, 4, dtype=torch.long))
    token_model = VLA(config_for("ar_bins"))
    with pytest.raises(ValueError, match="int64"):
        token_model.loss(obs, torch.zeros(3, 4, 3))
