"""Random-shift augmentation: shapes, content preserved up to a shift, one shift per camera over time."""

from __future__ import annotations

import torch

from vla.model.text_tokenizer import BOS_ID, PAD_ID, UNK_ID, TextTokenizer
from vla.train.augment import drop_words, random_shift


def test_zero_pad_is_identity():
    images = torch.rand(2, 2, 2, 3, 8, 8)
    assert random_shift(images, 0) is images


def test_shift_moves_content_and_keeps_shape():
    torch.manual_seed(0)
    images = torch.zeros(4, 2, 2, 3, 16, 16)
    images[..., 6:10, 6:10] = 1.0  # a bright square in the middle of every image
    out = random_shift(images, 3, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    # The square survives whole (a shift of at most 3 px never pushes it out of a 16 px frame)...
    assert torch.allclose(out.sum(dim=(-1, -2)), images.sum(dim=(-1, -2)))
    # ...but not everywhere at the same place: some (sample, camera) pairs were shifted.
    assert not torch.equal(out, images)
    # Every timestep of one (sample, camera) moved the same way.
    assert torch.equal(out[:, 0], out[:, 1])


def test_seeded_generator_is_deterministic():
    images = torch.rand(3, 1, 2, 3, 12, 12)
    a = random_shift(images, 2, torch.Generator().manual_seed(7))
    b = random_shift(images, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_word_dropout_replaces_only_vocabulary_words_by_unk():
    tokenizer = TextTokenizer.build(["pick up the red block", "press the blue button"])
    tokens, _ = tokenizer.encode(["pick up the red block", "press the zzq button"] * 200, 12)
    assert tokens[1].tolist().count(BOS_ID) == 1 and (tokens[1] < 259).sum() > 3  # "zzq" as bytes
    out = drop_words(tokens, 0.25, torch.Generator().manual_seed(0))
    changed = out != tokens
    assert changed.any() and bool((out[changed] == UNK_ID).all())
    # BOS, padding and byte tokens are never touched; about a quarter of the words are.
    assert bool((tokens[changed] >= 259).all())
    assert not changed[tokens == PAD_ID].any() and not changed[tokens == BOS_ID].any()
    words = tokens >= 259
    assert 0.2 < changed.sum().item() / words.sum().item() < 0.3
    assert torch.equal(out, drop_words(tokens, 0.25, torch.Generator().manual_seed(0)))  # seeded
    assert drop_words(tokens, 0.0) is tokens


def test_without_byte_fallback_unknown_words_read_as_unk():
    tokenizer = TextTokenizer.build(["put the red block on the plate"], byte_fallback=False)
    ids = tokenizer.token_ids("drop the red cube on the plate")
    assert (
        ids[0] == BOS_ID and ids[1] == UNK_ID and ids.count(UNK_ID) == 2 and len(ids) == 8
    )  # one id per word
    assert TextTokenizer.from_dict(tokenizer.to_dict()).token_ids("drop the red cube") == ids[:5]
