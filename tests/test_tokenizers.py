"""Action tokenizers (binning, FAST), the BPE under FAST, and the instruction tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla.model.action_tokenizers import (
    BinningTokenizer,
    FastTokenizer,
    action_tokenizer_from_state_dict,
    make_action_tokenizer,
)
from vla.model.bpe import BytePairEncoding, _merge, dct_matrix
from vla.model.text_tokenizer import BOS_ID, PAD_ID, UNK_ID, TextTokenizer

HORIZON, DIMS = 8, 4


def smooth_chunks(n: int, horizon: int = HORIZON, dims: int = DIMS, seed: int = 0) -> np.ndarray:
    """Random low-frequency trajectories in roughly [-1, 1], like normalized robot actions."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, horizon)[None, :, None]
    offset = rng.uniform(-0.7, 0.7, (n, 1, dims))
    amplitude = rng.uniform(0.0, 0.3, (n, 1, dims))
    frequency = rng.uniform(0.2, 1.0, (n, 1, dims))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, dims))
    return (offset + amplitude * np.sin(2 * np.pi * frequency * t + phase)).astype(np.float32)


# -- binning -----------------------------------------------------------------------------------
def test_binning_round_trip_within_half_a_bin():
    tok = make_action_tokenizer("binning").fit(np.zeros((1, HORIZON, DIMS)))
    chunks = np.random.default_rng(1).uniform(-1.3, 1.3, (64, HORIZON, DIMS)).astype(np.float32)
    tokens, mask = tok.encode(chunks)
    assert tokens.shape == (64, HORIZON * DIMS) and mask.all()
    assert int(tokens.min()) >= 0 and int(tokens.max()) < tok.num_bins
    decoded, report = tok.decode(tokens)
    assert report.ok and report.num_chunks == 64
    error = np.abs(decoded - np.clip(chunks, -1, 1))
    assert error.max() <= 1.0 / tok.num_bins + 1e-6  # half of the bin width 2/256


def test_binning_repairs_malformed_sequences_without_zeros():
    tok = BinningTokenizer(horizon=HORIZON, action_dim=DIMS)
    chunks = np.full((4, HORIZON, DIMS), 0.5, dtype=np.float32)
    tokens = tok.encode(chunks)[0].numpy()
    short = [tokens[0, : 3 * DIMS + 1]]  # 3 whole steps and a fragment
    with_specials = tokens[1].copy()
    with_specials[[2, 9]] = [tok.pad_id, 999]
    rows = [short[0], with_specials, np.array([tok.pad_id, -5]), np.concatenate([tokens[3], tokens[3]])]
    decoded, report = tok.decode(rows)
    assert report.num_chunks == 4
    assert report.invalid_tokens == 4  # pad + 999 in row 1, pad + -5 in row 2
    assert report.wrong_length == 4  # short, shortened by dropping 2 ids, empty after dropping, too long
    assert report.rejected == [2] and np.isnan(decoded[2]).all()
    assert report.repaired == 3 and not report.ok
    for i in (0, 1, 3):  # repaired by holding the last decoded action: close to 0.5, never 0
        assert np.isfinite(decoded[i]).all()
        assert np.abs(decoded[i] - 0.5).max() <= 1.0 / tok.num_bins + 1e-6


def test_binning_shape_and_nan_errors_name_the_problem():
    tok = BinningTokenizer(horizon=HORIZON, action_dim=DIMS)
    with pytest.raises(ValueError, match="horizon=8"):
        tok.encode(np.zeros((2, HORIZON + 1, DIMS)))
    bad = np.zeros((2, HORIZON, DIMS))
    bad[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match="chunk 1, step 3, dim 2"):
        tok.encode(bad)


# -- FAST --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast() -> FastTokenizer:
    return FastTokenizer(scale=10.0, bpe_vocab_size=512).fit(smooth_chunks(2000))


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(HORIZON)
    assert np.allclose(d @ d.T, np.eye(HORIZON), atol=1e-12)


def test_fast_round_trip_error_is_bounded_and_compresses(fast):
    chunks = smooth_chunks(500, seed=7)  # unseen chunks from the same distribution
    tokens, mask = fast.encode(chunks)
    decoded, report = fast.decode(tokens)
    assert report.ok, report.summary()
    error = np.abs(decoded - chunks)
    # Each coefficient is rounded by at most 0.5/scale; the inverse DCT's rows have norm 1.
    bound = 0.5 / fast.scale * np.sqrt(HORIZON)
    lengths = mask.sum(1).float()
    print(
        f"\nFAST round trip (H={HORIZON}, A={DIMS}, scale={fast.scale}): mean abs error "
        f"{error.mean():.4f}, max {error.max():.4f} (bound {bound:.4f}); tokens per chunk mean "
        f"{lengths.mean():.1f}, max {int(lengths.max())} (binning: {HORIZON * DIMS}); vocab {fast.vocab_size}"
    )
    assert error.max() <= bound
    assert error.mean() < 0.05
    assert lengths.mean() < HORIZON * DIMS / 2  # smooth chunks compress at least 2x
    assert (tokens[mask] == fast.eos_id).sum() == len(chunks)  # exactly one EOS per chunk


def test_fast_repairs_or_rejects_malformed_sequences(fast):
    chunks = smooth_chunks(5, seed=3)
    tokens, mask = fast.encode(chunks)
    rows = [t[m].numpy() for t, m in zip(tokens, mask, strict=True)]
    truncated = rows[0][:-3]  # lost its EOS and two tokens: missing coefficients become zeros
    invalid = np.insert(rows[1], 1, [fast.pad_id, fast.vocab_size + 7])
    padded_after_eos = np.concatenate([rows[2], [fast.pad_id] * 4, rows[2]])  # ignored after EOS
    only_eos = np.array([fast.eos_id])
    decoded, report = fast.decode([truncated, invalid, padded_after_eos, only_eos, rows[4]])
    assert report.missing_eos == 1
    assert report.invalid_tokens == 2
    assert report.rejected == [3] and np.isnan(decoded[3]).all()
    assert report.repaired == 2  # truncated, invalid
    assert np.isfinite(decoded[[0, 1, 2, 4]]).all()
    assert np.abs(decoded[1] - chunks[1]).max() < 0.1  # dropping the invalid ids lost nothing
    assert np.abs(decoded[2] - chunks[2]).max() < 0.1
    # The truncated chunk keeps its low frequencies: close to the original, far from zero actions.
    assert np.abs(decoded[0] - chunks[0]).mean() < np.abs(chunks[0]).mean()


def test_tokenizer_state_dicts_survive_json(fast):
    chunks = smooth_chunks(50, seed=11)
    for tok in (fast, BinningTokenizer().fit(chunks)):
        restored = action_tokenizer_from_state_dict(json.loads(json.dumps(tok.state_dict())))
        assert type(restored) is type(tok)
        assert restored.vocab_size == tok.vocab_size and restored.max_tokens == tok.max_tokens
        assert torch.equal(restored.encode(chunks)[0], tok.encode(chunks)[0])
    with pytest.raises(ValueError, match="unknown name"):
        action_tokenizer_from_state_dict({"name": "wavelet", "version": 1})


def test_generation_options_match_the_tokenizers(fast):
    binning = BinningTokenizer(horizon=HORIZON, action_dim=DIMS)
    assert binning.generation_options() == {"num_tokens": HORIZON * DIMS, "suppress_tokens": [binning.pad_id]}
    options = fast.generation_options()
    assert options["eos_token"] == fast.eos_id and options["num_tokens"] == fast.max_tokens
    assert fast.pad_id in options["suppress_tokens"] and fast.eos_id not in options["suppress_tokens"]


# -- BPE ---------------------------------------------------------------------------------------
def test_bpe_encode_matches_sequential_merges_and_decodes_back():
    rng = np.random.default_rng(5)
    corpus = [rng.choice(6, size=rng.integers(1, 30), p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]) for _ in range(300)]
    bpe = BytePairEncoding.train(corpus, base_vocab_size=6, vocab_size=40)
    assert bpe.vocab_size > 6
    encoded = bpe.encode(corpus)
    for seq, enc in zip(corpus, encoded, strict=True):
        assert np.array_equal(bpe.decode(enc), seq)
        reference = np.append(np.asarray(seq, dtype=np.int64), -1)  # apply every merge, in order
        for k, (a, b) in enumerate(bpe.merges):
            reference = _merge(reference, a, b, 6 + k)
        assert np.array_equal(enc, reference[:-1])
    assert sum(map(len, encoded)) < sum(map(len, corpus))


def test_bpe_merges_runs_left_to_right():
    flat = np.array([1, 1, 1, 2, 1, 1, 1, 1, -1])
    assert _merge(flat, 1, 1, 9).tolist() == [9, 1, 2, 9, 9, -1]


# -- text --------------------------------------------------------------------------------------
def test_text_tokenizer_hides_unknown_words_by_default():
    tok = TextTokenizer.build(["touch the red block", "press the blue button"])
    tokens, is_pad = tok.encode(["tap the red block", "zzq zzq"], max_len=6)
    assert tokens[0].tolist()[:2] == [BOS_ID, UNK_ID] and is_pad[0].tolist() == [
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    assert is_pad[1].tolist() == [False] + [True] * 5  # only BOS left: never an empty sequence
    assert not TextTokenizer.from_dict(tok.to_dict()).byte_fallback
    assert TextTokenizer.from_dict({"kind": "word", "words": ["a"]}).byte_fallback  # saved before: bytes


def test_text_tokenizer_builds_encodes_and_falls_back_to_bytes():
    instructions = ["Touch the red block.", "touch the BLUE block!", "touch the green block"]
    tok = TextTokenizer.build(instructions, byte_fallback=True)
    assert {"touch", "the", "red", "blue", "block", "."} <= set(tok.words)
    tokens, is_pad = tok.encode(["touch the red block.", "Touch the purple block"], max_len=12)
    assert tokens.shape == (2, 12) and tokens.dtype == torch.long
    assert (tokens[:, 0] == BOS_ID).all()
    assert torch.equal(is_pad, tokens == PAD_ID)
    assert int((~is_pad[0]).sum()) == 6  # BOS + 4 words + "."
    assert tok.decode(tokens[1]) == "touch the purple block"  # "purple" spelled in bytes
    assert int(tokens.max()) < tok.vocab_size
    truncated, pad = tok.encode(["touch the red block"], max_len=3)
    assert not pad.any() and tok.decode(truncated[0]) == "touch the"


def test_text_tokenizer_round_trips_json_and_caps_vocab():
    instructions = [f"word{i} " * (i + 1) for i in range(400)]
    tok = TextTokenizer.build(instructions, max_vocab_size=300, byte_fallback=True)
    assert tok.vocab_size == 300
    assert tok.words[0] == "word399"  # most frequent first
    restored = TextTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    a, _ = tok.encode(["word5 word399 unknown"], 16)
    b, _ = restored.encode(["word5 word399 unknown"], 16)
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="list of instructions"):
        tok.encode("touch the red block", 8)


def test_continuous_codec_round_trips_clips_and_rejects_non_finite_chunks():
    from vla.model.action_tokenizers import ContinuousCodec

    chunks = np.random.default_rng(0).uniform(-1.2, 1.2, (5, HORIZON, DIMS)).astype(np.float32)
    codec = make_action_tokenizer("continuous").fit(chunks)
    assert codec.max_tokens == HORIZON and codec.generation_options() == {"num_tokens": HORIZON}
    encoded, mask = codec.encode(chunks)
    assert encoded.dtype == torch.float32 and encoded.shape == chunks.shape and bool(mask.all())
    assert float(encoded.abs().max()) <= 1.0  # clipped like the discrete tokenizers
    decoded, report = codec.decode(encoded)
    np.testing.assert_allclose(decoded, np.clip(chunks, -1, 1), atol=1e-7)
    assert report.ok and report.num_chunks == 5
    bad = encoded.clone()
    bad[2, 1, 0] = float("nan")
    decoded, report = codec.decode(bad)
    assert report.rejected == [2] and np.isnan(decoded[2]).all() and np.isfinite(decoded[[0, 1, 3, 4]]).all()
    with pytest.raises(ValueError, match="shape"):
        codec.decode(torch.zeros(2, HORIZON + 1, DIMS))
    restored = action_tokenizer_from_state_dict(codec.state_dict())
    assert isinstance(restored, ContinuousCodec) and restored.max_tokens == HORIZON


# -- grounding ---------------------------------------------------------------------------------
_GROUNDING_EPISODES = [
    ("press the red button", "press-red"),
    ("hit the red button", "press-red"),
    ("press the blue button", "press-blue"),
    ("touch the red block", "reach-red"),
    ("pick up the red block", "pick-red"),
    ("go to the red cube", "reach-red"),
    ("raise the red cube", "pick-red"),
]


def _grounded_tokenizer(episodes=_GROUNDING_EPISODES) -> TextTokenizer:
    return TextTokenizer.build([text for text, _ in episodes], tasks=[task for _, task in episodes])


def _reads(tok: TextTokenizer, text: str, max_len: int = 12) -> str:
    tokens, is_pad = tok.encode([text], max_len)
    return tok.decode(tokens[0][~is_pad[0]])


def test_grounding_reads_unknown_words_as_the_one_task_their_known_words_fit():
    tok = _grounded_tokenizer()
    # "red" + "button": only press-red instructions hold both; the shortest one is read.
    assert _reads(tok, "click the red button") == "hit the red button"
    assert _reads(tok, "depress the red button!") == "hit the red button"
    assert _reads(tok, "hold the red block up high") == "pick up the red block"  # "up": pick only
    # "the red cube": reach-red and pick-red instructions both hold it -> no guess, words hidden.
    assert _reads(tok, "take the red cube off the table") == "the red cube the"
    assert _reads(tok, "zzq qqz") == ""  # nothing known: nothing to ground
    assert _reads(tok, "press the red block") == "press the red block"  # every word known: read as is


def test_grounding_never_targets_an_instruction_two_tasks_share_and_round_trips_json():
    tok = _grounded_tokenizer([*_GROUNDING_EPISODES, ("press the blue button", "press-blue-again")])
    assert _reads(tok, "click the blue button") == "the blue button"  # its only holder is shared
    restored = TextTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored.grounding == tok.grounding
    assert _reads(restored, "click the red button") == "hit the red button"
    assert TextTokenizer.from_dict({**tok.to_dict(), "grounding": None}).grounding is None  # saved before


def test_grounding_reads_a_training_instruction_as_itself_even_with_a_capped_vocabulary():
    episodes = [("lift it up", "pick")] * 3 + [("lift it zz", "pick")]  # "zz": rarest, left out
    tok = TextTokenizer.build([t for t, _ in episodes], max_vocab_size=262, tasks=[k for _, k in episodes])
    assert "zz" not in tok.words
    assert _reads(tok, "lift it zz") == "lift it"  # itself, its unknown word hidden: not regrounded
    assert _reads(tok, "lift it soon") == "lift it up"  # a new phrasing is grounded


def test_grounding_decides_on_the_words_that_fit_and_rejects_bad_input():
    tok = _grounded_tokenizer()
    # Only 3 ids fit (BOS + 2 words): "click the" decides, and "the" fits every task: hidden.
    tokens, is_pad = tok.encode(["click the red button"], 3)
    assert tok.decode(tokens[0][~is_pad[0]]) == "the"
    with pytest.raises(ValueError, match="byte-fallback"):
        TextTokenizer.build(["go"], byte_fallback=True, tasks=["go"])
    with pytest.raises(ValueError, match="2 instructions but 1 tasks"):
        TextTokenizer.build(["go", "stop"], tasks=["go"])
    with pytest.raises(ValueError, match="empty task name"):
        TextTokenizer.build(["go"], tasks=[""])
    with pytest.raises(ValueError, match="instruction strings to task strings"):
        TextTokenizer.from_dict({**tok.to_dict(), "grounding": {"go": 3}})


def test_training_pads_text_to_the_longest_instruction_not_to_max_text_len(caplog):
    from vla.inputs import text_positions

    instructions = ["reach the red block", "move the gripper to the red block", "press the red button"]
    tok = TextTokenizer.build(instructions)
    assert text_positions(tok, instructions, max_len=16) == 8  # BOS + 7 words
    with caplog.at_level("WARNING", logger="vla.inputs"):
        assert text_positions(tok, instructions, max_len=5) == 5  # never more than max_text_len
    assert "1 instruction(s) take more than max_text_len=5 ids" in caplog.text  # cut, and said so
    assert "move the gripper to the red block" in caplog.text
    assert text_positions(tok, [], max_len=16) == 16
    # Encoded at that length, every instruction is whole: nothing is cut.
    tokens, is_pad = tok.encode(instructions, text_positions(tok, instructions, 16))
    assert tokens.shape == (3, 8) and not is_pad[1].any() and is_pad[0, 5:].all()
    assert tok.decode(tokens[1].tolist()) == "move the gripper to the red block"
