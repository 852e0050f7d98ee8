"""Training augmentation: random shifts (shapes, content preserved up to a shift, one shift per camera
over time) and label-preserving word dropout (words hidden, never those that tell the tasks apart)."""

from __future__ import annotations

import torch

from vla.model.text_tokenizer import BOS_ID, FIRST_WORD_ID, UNK_ID, TextTokenizer
from vla.train.augment import WordDropout, random_shift


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


_TASKS = {
    "pick up the red block": "pick-red",
    "lift the red block": "pick-red",
    "touch the red block": "reach-red",
    "put the red block on the plate": "place-red",
    "press the blue button": "press-blue",
}


def _word_dropout(prob: float) -> tuple[TextTokenizer, WordDropout]:
    tokenizer = TextTokenizer.build(list(_TASKS))
    return tokenizer, WordDropout.build(prob, list(_TASKS), list(_TASKS.values()), tokenizer, 12)


def test_word_dropout_hides_words_but_never_those_that_tell_the_tasks_apart():
    tokenizer, dropout = _word_dropout(0.5)
    texts = list(_TASKS) * 200
    tokens, is_pad = tokenizer.encode(texts, 12)
    hidden = dropout(tokens, is_pad, torch.Generator().manual_seed(0))
    assert bool(hidden[is_pad].all())  # padding stays padding
    newly = hidden & ~is_pad
    assert not newly[:, 0].any() and bool((tokens[newly] >= FIRST_WORD_ID).all())  # words only, never BOS
    assert 0.1 < newly.sum().item() / (~is_pad[:, 1:]).sum().item() < 0.5
    word_sets = {text: set(text.split()) for text in _TASKS}
    seen = set()
    for text, ids, row in zip(texts, tokens.tolist(), hidden.tolist(), strict=True):
        visible = tokenizer.decode(i for i, h in zip(ids, row, strict=True) if not h).split()
        seen.add((text, " ".join(visible)))
        # Whatever is left still names the task: no other task's instruction holds all of it.
        others = [w for other, w in word_sets.items() if _TASKS[other] != _TASKS[text]]
        assert not any(set(visible) <= other for other in others), (text, visible)
    assert ("put the red block on the plate", "the red block on the plate") in seen or any(
        text.startswith("put") and "plate" in v and "put" not in v for text, v in seen
    )
    assert not any(v == "the red block" for _, v in seen)  # reach, pick and place all hold these
    assert torch.equal(hidden, dropout(tokens, is_pad, torch.Generator().manual_seed(0)))  # seeded
    assert _word_dropout(0.0)[1](tokens, is_pad) is is_pad


def test_word_dropout_leaves_instructions_it_was_not_built_with_whole():
    tokenizer, dropout = _word_dropout(0.9)
    tokens, is_pad = tokenizer.encode(["press the red button", "the red block"] * 20, 12)
    assert torch.equal(dropout(tokens, is_pad, torch.Generator().manual_seed(1)), is_pad)


def test_word_dropout_keeps_whole_an_instruction_two_tasks_share():
    tokenizer = TextTokenizer.build(["go there", "go there", "stop"])
    dropout = WordDropout.build(0.9, ["go there", "go there", "stop"], ["a", "b", "c"], tokenizer, 8)
    tokens, is_pad = tokenizer.encode(["go there"] * 20, 8)
    assert torch.equal(dropout(tokens, is_pad, torch.Generator().manual_seed(1)), is_pad)


def test_unknown_words_are_hidden_unless_spelled_in_bytes():
    tokenizer = TextTokenizer.build(["put the red block on the plate"])
    ids = tokenizer.token_ids("drop the red cube on the plate")
    assert (
        ids[0] == BOS_ID and ids[1] == UNK_ID and ids.count(UNK_ID) == 2 and len(ids) == 8
    )  # one id per word
    assert TextTokenizer.from_dict(tokenizer.to_dict()).token_ids("drop the red cube") == ids[:5]
    tokens, is_pad = tokenizer.encode(["drop the red cube on the plate"], 10)
    assert is_pad[0].tolist() == [False, True, False, False, True, False, False, False, True, True]
    visible = tokenizer.decode(
        i for i, h in zip(tokens[0].tolist(), is_pad[0].tolist(), strict=True) if not h
    )
    assert visible == "the red on the plate"
    with_bytes = TextTokenizer.build(["put the red block on the plate"], byte_fallback=True)
    visible_ids = (~with_bytes.encode(["drop the red cube"], 16)[1]).sum().item()
    assert visible_ids == 1 + 4 + 1 + 1 + 4  # BOS, "drop" and "cube" as 4 visible bytes each
