"""Low-precision inference weights: int8 quantization, bf16/int8 decoding against fp32, caching, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_model import model_and_inputs

from vla.model import inference_weights
from vla.model.decoding import DecodeOptions
from vla.model.inference_weights import PRECISIONS, StepLinear, check_precision, prepare, quantize_int8

pytestmark = pytest.mark.usefixtures("one_thread")


def test_int8_quantization_is_within_half_a_step_per_row():
    weight = torch.randn(48, 32) * torch.linspace(0.01, 3.0, 48)[:, None]  # rows of very different scales
    q, scales = quantize_int8(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scales.shape == (48,)
    assert int(q.abs().max()) <= 127
    error = (q.float() * scales[:, None] - weight).abs()
    assert torch.all(error <= scales[:, None] / 2 + 1e-7)


def test_int8_step_linear_multiplies_by_the_dequantized_weight():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 40)
    q, scales = quantize_int8(layer.weight)
    x = torch.randn(3, 64)
    step = StepLinear(q, layer.bias.detach().bfloat16(), scales.bfloat16())
    expected = x @ (q.float() * scales[:, None]).t() + layer.bias.detach()
    torch.testing.assert_close(step(x.bfloat16()).float(), expected, atol=0.05, rtol=0.02)
    plain = StepLinear(layer.weight.detach().t().contiguous(), layer.bias.detach())
    torch.testing.assert_close(plain(x), layer(x).detach())


def peaked_model(seed: int):
    """A model whose logits are far apart (as after training), so greedy choices are well defined."""
    model, config, obs, tokens = model_and_inputs(seed=seed, vision_encoder="conv", film=True)
    with torch.no_grad():
        model.action_head.out.weight.mul_(40.0)
    return model, config, obs, tokens


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_decoding_tracks_fp32(precision):
    model, config, obs, _ = peaked_model(seed=5)
    n = config.max_action_tokens
    options = DecodeOptions(num_tokens=n, return_logits=True)
    reference, reference_logits = model.generate(obs, options)
    tokens, logits = model.generate(obs, options, precision=precision)
    assert logits.dtype == torch.float32 and tokens.shape == reference.shape
    scale = float(reference_logits.abs().max())
    for row in range(tokens.shape[0]):
        differs = tokens[row] != reference[row]
        first = int(differs.float().argmax()) if bool(differs.any()) else n
        # Up to and including the first differing token both decoders saw the same history:
        # their logits stay close ...
        seen = slice(0, min(first + 1, n))
        error = float((logits[row, seen] - reference_logits[row, seen]).abs().max())
        assert error < 0.05 * scale, (row, error, scale)
        # ... and they part only at a near-tie of the fp32 logits, within the low-precision error.
        if first < n:
            ref_logits = reference_logits[row, first]
            margin = float(ref_logits[reference[row, first]] - ref_logits[tokens[row, first]])
            assert margin <= 2 * error, (row, first, margin, error)


def test_bf16_cached_decoding_equals_its_uncached_forward():
    model, config, obs, _ = peaked_model(seed=6)
    n = config.max_action_tokens
    options = DecodeOptions(num_tokens=n, return_logits=True)
    cached, cached_logits = model.generate(obs, options, precision="bf16")
    plain, plain_logits = model.generate(obs, options, precision="bf16", use_cache=False)
    assert torch.equal(cached, plain)
    scale = float(plain_logits.abs().max())
    assert float((cached_logits - plain_logits).abs().max()) < 0.02 * scale


def test_copies_follow_weight_updates_and_leave_the_model_untouched():
    model, config, obs, tokens = model_and_inputs(seed=7)
    keys = set(model.state_dict())
    options = DecodeOptions(return_logits=True)
    before = model.generate(obs, options, precision="int8")[1]
    first = prepare(model, "int8")
    assert prepare(model, "int8") is first  # cached while nothing changes
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model.loss(obs, tokens).backward()  # the master still trains: fp32 and requires_grad
    optimizer.step()
    model.eval()
    assert prepare(model, "int8") is not first
    after = model.generate(obs, options, precision="int8")[1]
    assert not torch.allclose(before, after, atol=1e-3)
    assert set(model.state_dict()) == keys
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())


def test_unknown_or_unsupported_precision_is_refused():
    model, config, obs, _ = model_and_inputs(seed=8)
    with pytest.raises(ValueError, match="precision must be one of.*'fp16'"):
        model.generate(obs, {"num_tokens": 2}, precision="fp16")
    with pytest.raises(ValueError, match="CPU"):
        check_precision("int8", torch.device("cuda"))
    for precision in PRECISIONS:
        check_precision(precision, torch.device("cpu"))


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_warns_once_per_build(monkeypatch, fast_bf16):
    monkeypatch.setattr(inference_weights, "cpu_has_fast_bf16", lambda: fast_bf16)
    model, _, obs, _ = model_and_inputs(seed=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # the second call reuses the prepared copy: no second warning
            model.generate(obs, {"num_tokens": 2}, precision="bf16")
        model.generate(obs, {"num_tokens": 2}, precision="fp32")
    slow = [w for w in caught if issubclass(w.category, RuntimeWarning) and "emulates" in str(w.message)]
    assert len(slow) == (0 if fast_bf16 else 1)
    if slow:
        assert "'bf16'" in str(slow[0].message) and "fp32" in str(slow[0].message)
