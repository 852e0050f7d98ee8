"""The VLA transformer: attention mask, KV-cache decoding, learning, sizes and input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vla.model.decoding import DecodeOptions
from vla.model.model import VLA, VLAConfig

POLICIES = Path(__file__).resolve().parents[1] / "policies"


pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**overrides) -> VLAConfig:
    values = dict(
        cameras=("front", "wrist"), image_size=32, patch_size=8, state_dim=5, action_dim=3, n_obs_steps=2,
        horizon=4, n_layer=2, n_head=2, n_embd=32, text_vocab_size=64, max_text_len=8,
        action_vocab_size=20, max_action_tokens=12,
    )  # fmt: skip
    values.update(overrides)
    return VLAConfig(**values)


def make_obs(config: VLAConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T, N, S = config.n_obs_steps, len(config.cameras), config.image_size
    text_len = 6
    obs = {
        "images": torch.rand(batch, T, N, 3, S, S, generator=g),
        "state": torch.randn(batch, T, config.state_dim, generator=g),
        "obs_is_pad": torch.zeros(batch, T, dtype=torch.bool),
        "text_tokens": torch.randint(3, config.text_vocab_size, (batch, text_len), generator=g),
        "text_is_pad": torch.zeros(batch, text_len, dtype=torch.bool),
    }
    return obs


def model_and_inputs(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = small_config(**overrides)
    model = VLA(config).eval()
    obs = make_obs(config)
    tokens = torch.randint(0, config.action_vocab_size, (2, config.max_action_tokens))
    return model, config, obs, tokens


def prefix_layout(config: VLAConfig, text_len: int = 6) -> tuple[slice, slice, slice]:
    """Positions of the text, observation step 0 and step 1 in the sequence."""
    per_step = len(config.cameras) * (config.image_size // config.patch_size) ** 2 + config.state_tokens
    return (
        slice(0, text_len),
        slice(text_len, text_len + per_step),
        slice(text_len + per_step, text_len + 2 * per_step),
    )


# -- attention ---------------------------------------------------------------------------------
def test_later_timestep_never_changes_earlier_prefix_outputs():
    model, config, obs, tokens = model_and_inputs()
    text, step0, step1 = prefix_layout(config)
    before, _ = model.hidden_states(obs, tokens)
    changed = dict(obs, images=obs["images"].clone(), state=obs["state"].clone())
    changed["images"][:, 1] = torch.rand_like(changed["images"][:, 1])
    changed["state"][:, 1] += 1.0
    after, prefix_len = model.hidden_states(changed, tokens)
    torch.testing.assert_close(after[:, text], before[:, text])
    torch.testing.assert_close(after[:, step0], before[:, step0])
    assert not torch.allclose(after[:, step1], before[:, step1])
    assert not torch.allclose(after[:, prefix_len:], before[:, prefix_len:])  # actions see step 1
    # The instruction is visible to every observation step.
    changed_text = dict(obs, text_tokens=(obs["text_tokens"] + 1) % config.text_vocab_size)
    after_text, _ = model.hidden_states(changed_text, tokens)
    assert not torch.allclose(after_text[:, step0], before[:, step0])


def test_action_tokens_are_causal():
    model, config, obs, tokens = model_and_inputs()
    before = model(obs, tokens)
    j = 5
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] + 1) % config.action_vocab_size
    after = model(obs, changed)
    # logits[:, i] sees tokens[:, :i] only: positions <= j are untouched, every later one changes.
    torch.testing.assert_close(after[:, : j + 1], before[:, : j + 1])
    for i in range(j + 1, tokens.shape[1]):
        assert not torch.allclose(after[:, i], before[:, i])


def test_padded_text_and_observation_steps_are_ignored():
    model, config, obs, tokens = model_and_inputs()
    obs["text_is_pad"][0, 4:] = True
    obs["obs_is_pad"][0, 0] = True
    before = model(obs, tokens)
    changed = dict(obs, text_tokens=obs["text_tokens"].clone(), images=obs["images"].clone())
    changed["text_tokens"][0, 4:] = 7
    changed["images"][0, 0] = torch.rand_like(changed["images"][0, 0])
    after = model(changed, tokens)
    torch.testing.assert_close(after, before)


@pytest.mark.parametrize("film", [False, True])
def test_trailing_text_padding_can_be_cut_without_changing_the_output(film):
    # Training pads instructions to the store's longest, not to max_text_len (vla.inputs.text_positions):
    # sound only because positions that are padding in every row change nothing.
    extra = {"vision_encoder": "conv", "film": True} if film else {}
    model, config, obs, tokens = model_and_inputs(seed=2, **extra)
    obs["text_is_pad"][:, 4:] = True
    obs["text_is_pad"][1, 2] = True  # a hidden word inside the kept positions stays hidden
    trimmed = dict(obs, text_tokens=obs["text_tokens"][:, :4], text_is_pad=obs["text_is_pad"][:, :4])
    torch.testing.assert_close(model(trimmed, tokens), model(obs, tokens), atol=1e-5, rtol=1e-4)
    padded_more = dict(obs, text_tokens=torch.nn.functional.pad(obs["text_tokens"], (0, 2)),
                       text_is_pad=torch.nn.functional.pad(obs["text_is_pad"], (0, 2), value=True))  # fmt: skip
    assert padded_more["text_tokens"].shape[1] == config.max_text_len
    torch.testing.assert_close(model(padded_more, tokens), model(obs, tokens), atol=1e-5, rtol=1e-4)


# -- decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("padded,film", [(False, False), (True, False), (False, True), (True, True)])
def test_kv_cache_decoding_equals_the_uncached_forward(padded, film):
    extra = {"vision_encoder": "conv", "film": True} if film else {}
    model, config, obs, _ = model_and_inputs(seed=1, **extra)
    if padded:
        obs["text_is_pad"][1, 3:] = True
        obs["obs_is_pad"][0, 0] = True
    n = config.max_action_tokens
    options = DecodeOptions(num_tokens=n, return_logits=True)
    cached, cached_logits = model.generate(obs, options, use_cache=True)
    plain, plain_logits = model.generate(obs, options, use_cache=False)
    assert cached.shape == (2, n)
    assert torch.equal(cached, plain)
    torch.testing.assert_close(cached_logits, plain_logits, atol=1e-5, rtol=1e-4)
    # Teacher forcing on the generated tokens gives the same logits again.
    torch.testing.assert_close(model(obs, cached), cached_logits, atol=1e-5, rtol=1e-4)


def test_cached_decoding_follows_weight_updates():
    """The decode step keeps transposed copies of the weights: an optimizer step must invalidate them."""
    model, config, obs, tokens = model_and_inputs(seed=3)
    options = DecodeOptions(return_logits=True)
    before = model.generate(obs, options)[1]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model.loss(obs, tokens).backward()
    optimizer.step()
    model.eval()
    cached = model.generate(obs, options, use_cache=True)
    plain = model.generate(obs, options, use_cache=False)
    assert not torch.allclose(before, cached[1], atol=1e-4)
    assert torch.equal(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1], atol=1e-5, rtol=1e-4)


def test_sampling_is_seeded_and_respects_suppress_and_eos():
    model, config, obs, _ = model_and_inputs(seed=2)
    draws = [
        model.generate(
            obs,
            DecodeOptions(
                num_tokens=10, temperature=1.5, top_k=5, generator=torch.Generator().manual_seed(3)
            ),
            use_cache=c,
        )
        for c in (True, False)
    ]
    assert torch.equal(draws[0], draws[1])
    greedy = model.generate(obs, {"num_tokens": 10})
    banned = sorted(set(greedy.flatten().tolist()))[:3]
    steered = model.generate(obs, {"num_tokens": 10, "suppress_tokens": banned})
    assert not torch.isin(steered, torch.tensor(banned)).any()
    eos, pad = int(greedy[0, 0]), config.action_vocab_size - 1
    stopped = model.generate(obs, {"num_tokens": 10, "eos_token": eos, "pad_token": pad})
    assert stopped[0, 0] == eos and (stopped[0, 1:] == pad).all()


# -- learning ----------------------------------------------------------------------------------
def test_tiny_model_overfits_a_small_batch():
    torch.manual_seed(0)
    config = small_config(cameras=("front",), image_size=16, n_embd=64, n_head=4, action_vocab_size=32)
    model = VLA(config)
    obs = make_obs(config, batch=4, seed=4)
    tokens = torch.randint(0, 31, (4, config.max_action_tokens), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, -2:] = False  # masked positions must not count
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = model.loss(obs, tokens, mask)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 3.0 and loss.item() < 0.05
    generated = model.generate(obs)
    assert torch.equal(generated[:, :-2], tokens[:, :-2])


def test_loss_ignores_masked_tokens():
    model, config, obs, tokens = model_and_inputs()
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 8:] = False
    changed = tokens.clone()
    changed[:, 8:] = 0  # only later (masked) targets change; earlier logits cannot see them
    torch.testing.assert_close(model.loss(obs, tokens, mask), model.loss(obs, changed, mask))


# -- sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "low", "high"), [("tiny", 0.8e6, 2.5e6), ("small", 20e6, 32e6), ("base", 100e6, 200e6)]
)
def test_policy_sizes(name, low, high):
    section = OmegaConf.to_container(OmegaConf.load(POLICIES / f"{name}.yaml").model)
    # What the demo data fills in: two 64x64 cameras, 4-D actions, a 10-D state.
    config = VLAConfig(**section, image_size=64, state_dim=10, action_dim=4, text_vocab_size=300,
                       action_vocab_size=1026, max_action_tokens=65)  # fmt: skip
    with torch.device("meta"):
        count = VLA(config).num_parameters()
    print(f"\n{name}: {count / 1e6:.2f}M parameters")
    assert low <= count <= high


# -- configuration and errors ------------------------------------------------------------------
def test_config_round_trips_and_rejects_unknown_fields():
    config = small_config()
    assert VLAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="n_layers"):
        VLAConfig.from_dict({**config.to_dict(), "n_layers": 3})
    with pytest.raises(ValueError, match="multiple of n_head"):
        small_config(n_embd=30, n_head=4)


def test_bad_inputs_name_the_problem():
    model, config, obs, tokens = model_and_inputs()
    with pytest.raises(ValueError, match="images"):
        model(dict(obs, images=obs["images"][:, :, :1]), tokens)
    with pytest.raises(KeyError, match="state"):
        model({k: v for k, v in obs.items() if k != "state"}, tokens)
    with pytest.raises(ValueError, match="max_action_tokens"):
        model(obs, torch.zeros(2, config.max_action_tokens + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="timesteps"):
        model(dict(obs, images=obs["images"].repeat(1, 2, 1, 1, 1, 1)), tokens)


def test_fewer_history_steps_and_no_instruction_are_accepted():
    model, config, obs, tokens = model_and_inputs()
    one_step = {"images": obs["images"][:, -1:], "state": obs["state"][:, -1:]}
    assert model(one_step, tokens).shape == (2, config.max_action_tokens, config.action_vocab_size)


def test_film_conditions_the_vision_stem_on_the_instruction():
    model, config, obs, tokens = model_and_inputs(seed=4, vision_encoder="conv", film=True)
    # FiLM starts as the identity: the instruction reaches the image tokens only once it has trained.
    first_stage = model.vision.stem.films[0]
    assert torch.count_nonzero(first_stage.weight) == 0 and torch.count_nonzero(first_stage.bias) == 0
    other_text = dict(obs, text_tokens=(obs["text_tokens"] + 1) % config.text_vocab_size)
    images_only = slice(6, 6 + len(config.cameras) * (config.image_size // config.patch_size) ** 2)
    with torch.no_grad():
        for film in model.vision.stem.films:
            torch.nn.init.normal_(film.weight, std=0.5)
        same = model.embed_prefix(obs)[0][:, images_only]
        assert torch.equal(same, model.embed_prefix(obs)[0][:, images_only])
        changed = model.embed_prefix(other_text)[0][:, images_only]
    assert (same - changed).abs().max() > 1e-3  # the instruction now changes what the stem sees
    # Padded text tokens do not enter the instruction vector.
    padded = dict(obs, text_is_pad=torch.zeros_like(obs["text_is_pad"]))
    padded["text_is_pad"][:, 4:] = True
    altered = dict(padded, text_tokens=padded["text_tokens"].clone())
    altered["text_tokens"][:, 4:] = 5
    with torch.no_grad():
        torch.testing.assert_close(model.embed_prefix(padded)[0][:, images_only],
                                   model.embed_prefix(altered)[0][:, images_only])  # fmt: skip
    assert model(obs, tokens).shape == (2, config.max_action_tokens, config.action_vocab_size)
    with pytest.raises(ValueError, match="film needs vision_encoder 'conv'"):
        small_config(film=True)


def test_stem_blocks_add_residual_convs_after_every_stage_but_the_first():
    plain = VLA(small_config(vision_encoder="conv", film=True)).vision.stem
    deeper_model = VLA(small_config(vision_encoder="conv", film=True, stem_blocks=2))
    deeper = deeper_model.vision.stem
    stages = len(plain.convs)  # patch_size 8: three stride-2 stages
    assert [c.stride[0] for c in deeper.convs] == [2] + [2, 1, 1] * (stages - 1)
    assert deeper.residual == [False] + [False, True, True] * (stages - 1)
    assert not any(plain.residual)
    # The same tokens come out, so nothing downstream of the stem changes; every conv learns.
    config, obs = deeper_model.config, make_obs(deeper_model.config)
    tokens = torch.zeros(2, 4, dtype=torch.long)
    deeper_model.loss(obs, tokens).backward()
    assert all(conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0 for conv in deeper.convs)
    grid = config.image_size // config.patch_size
    assert deeper_model.vision(obs["images"][:, 0, 0], torch.zeros(2, config.n_embd)).shape == (
        2, grid * grid, config.n_embd)  # fmt: skip
    # Without them the stem keeps the layout checkpoints saved before the option existed.
    assert sorted(k for k in plain.state_dict() if k.startswith("convs.")) == sorted(
        f"convs.{i}.{p}" for i in range(stages) for p in ("weight", "bias")
    )
    with pytest.raises(ValueError, match="stem_blocks must be >= 0"):
        small_config(stem_blocks=-1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The given buffer is not writable")
def test_conv_and_pretrained_vision_encoders(tmp_path):
    config = small_config(vision_encoder="conv")
    obs, tokens = make_obs(config), torch.zeros(2, 4, dtype=torch.long)
    assert VLA(config)(obs, tokens).shape == (2, 4, config.action_vocab_size)

    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 4, stride=4), torch.nn.ReLU())
    scripted = tmp_path / "backbone.pt"
    torch.jit.save(torch.jit.script(backbone), str(scripted))
    exported = tmp_path / "backbone.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(
        torch.export.export(backbone, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},)), exported
    )
    for path in (scripted, exported):
        model = VLA(small_config(vision_encoder=f"pretrained:{path}"))
        assert model(obs, tokens).shape == (2, 4, config.action_vocab_size)
        frozen = list(model.vision.backbone.parameters())
        assert frozen and not any(p.requires_grad for p in frozen)
        assert model.num_parameters(trainable_only=True) < model.num_parameters()
        loaded = dict(model.vision.backbone.named_parameters())
        for key, original in backbone.named_parameters():  # weights stay as exported, not re-initialized
            torch.testing.assert_close(loaded[key], original.detach())
    with pytest.raises(ValueError, match="cannot load the pretrained vision encoder"):
        VLA(small_config(vision_encoder=f"pretrained:{tmp_path / 'missing.pt'}"))
    with pytest.raises(ValueError, match="unknown vision encoder"):
        VLA(small_config(vision_encoder="resnet"))


def test_the_conv_stem_runs_channels_last_and_saves_contiguous_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_model

    from vla.checkpoint import load_weights

    model, config, obs, tokens = model_and_inputs(seed=5, vision_encoder="conv", film=True, stem_blocks=1)
    convs = model.vision.stem.convs
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    # The layout changes only the order in memory: the NCHW model computes the same loss.
    nchw = VLA(config).eval()
    nchw.load_state_dict(model.state_dict())
    nchw.to(memory_format=torch.contiguous_format)
    assert not convs[0].weight.is_contiguous() and nchw.vision.stem.convs[0].weight.is_contiguous()
    torch.testing.assert_close(nchw.loss(obs, tokens), model.loss(obs, tokens), rtol=1e-5, atol=1e-6)
    # A checkpoint stores plain contiguous tensors and loads back into the channels-last model.
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    assert all(t.is_contiguous() for t in load_file(str(path)).values())
    reloaded = VLA(config).eval()
    load_weights(reloaded, path)
    assert reloaded.vision.stem.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(reloaded.loss(obs, tokens), model.loss(obs, tokens), rtol=0, atol=0)
