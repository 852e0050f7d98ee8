"""A word-level text tokenizer built from the dataset's instructions; unknown words are hidden.

Nothing is downloaded: the vocabulary is built from the training instructions (lower-cased, words and
punctuation split apart) and saved in the checkpoint as JSON. A word outside the vocabulary reads as
one UNK, which :meth:`TextTokenizer.encode` marks as padding, so the model never sees it: a held-out
phrasing reads as a training phrasing with its unseen words left out ("drop the red cube on the
plate" -> "the red cube on the plate"). Why: on the 20-task tabletop suite the same weights succeeded
80.0% of the time with held-out phrasings this way (50 seeds per task), against 43.2% when unknown
words were spelled as UTF-8 byte tokens the model had never trained on (``byte_fallback=True``,
what checkpoints saved before this change use, and still do when loaded). Training with word dropout
(``train.word_dropout``) hides words the same way, so the model also learns to act on partial
instructions.

Grounding: a tokenizer built with the training episodes' tasks (what ``vla train`` saves) first
tries to read an instruction with unknown words as the one training instruction its known words
can only mean ("click the red button" -> "hit the red button"); only when they could mean two tasks
or none are the unknown words hidden (:mod:`vla.model.instruction_grounding`).

Ids: ``PAD=0``, ``UNK=1``, ``BOS=2`` (every sequence starts with it, so no sequence is empty), then
256 byte ids, then words by decreasing frequency (ties alphabetical, so builds are reproducible).

Pretrained text encoders: the model embeds these ids with its own table (``VLAConfig.text_encoder =
"embedding"``). A local pretrained encoder plugs in through ``vla.model.encoders.TEXT_ENCODERS`` and
brings its own tokenizer; this class is then unused.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # instruction_grounding imports split_words from here
    from vla.model.instruction_grounding import InstructionGrounding

PAD_ID, UNK_ID, BOS_ID = 0, 1, 2
_BYTE_OFFSET = 3
_NUM_BYTES = 256
FIRST_WORD_ID = _BYTE_OFFSET + _NUM_BYTES
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and single punctuation marks."""
    return _WORD_RE.findall(text.lower())


def _head(text: str, words: int) -> str:
    """``text`` up to the end of its ``words``-th word (all of it if it has fewer)."""
    for count, match in enumerate(_WORD_RE.finditer(text), 1):
        if count == words:
            return text[: match.end()]
    return text


class TextTokenizer:
    """Word vocabulary, unknown words hidden (or spelled in bytes); see the module docstring."""

    def __init__(
        self,
        words: Sequence[str] = (),
        byte_fallback: bool = False,
        grounding: InstructionGrounding | None = None,
    ):
        self.words = list(words)
        self.byte_fallback = byte_fallback
        self.grounding = grounding
        self._ids = {w: FIRST_WORD_ID + i for i, w in enumerate(self.words)}
        if len(self._ids) != len(self.words):
            raise ValueError("the word list of a text tokenizer contains duplicates")
        if grounding is not None and byte_fallback:
            raise ValueError(
                "grounding applies to hidden unknown words; a byte-fallback tokenizer spells them"
            )

    @property
    def vocab_size(self) -> int:
        return FIRST_WORD_ID + len(self.words)

    @classmethod
    def build(
        cls,
        instructions: Iterable[str],
        max_vocab_size: int = 512,
        min_count: int = 1,
        byte_fallback: bool = False,
        tasks: Sequence[str] | None = None,
    ) -> TextTokenizer:
        """A vocabulary of the most frequent words in ``instructions``, ``vocab_size <= max_vocab_size``;
        every other word reads as a hidden UNK (``byte_fallback=True``: as its visible UTF-8 bytes).

        ``tasks`` (each instruction's task, in the same order) adds grounding (module docstring)."""
        if max_vocab_size < FIRST_WORD_ID:
            raise ValueError(f"max_vocab_size must be at least {FIRST_WORD_ID} (specials + 256 bytes)")
        instructions = list(instructions)
        counts = Counter(w for text in instructions for w in split_words(text))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        grounding = None
        if tasks is not None:
            from vla.model.instruction_grounding import InstructionGrounding

            grounding = InstructionGrounding.build(instructions, tasks)
        return cls(ranked[: max_vocab_size - FIRST_WORD_ID], byte_fallback=byte_fallback, grounding=grounding)

    def token_ids(self, text: str, limit: int | None = None) -> list[int]:
        """The ids of one instruction, BOS first, without padding; at most ``limit`` of them.

        With ``limit`` only the head of ``text`` is tokenized: each word gives at least one id, so
        the first ``limit`` words hold the first ``limit`` ids (one more word is kept, so that
        lower-casing sees the same neighbours), and a long word's bytes are cut. A 15 MB
        instruction then costs what a short one does, instead of holding a server for seconds.
        """
        if limit is not None:
            text = _head(text, limit + 1)
        ids = [BOS_ID]
        for word in self._grounded(text, limit):
            if limit is not None and len(ids) >= limit:
                break
            if word in self._ids:
                ids.append(self._ids[word])
            elif self.byte_fallback:
                room = None if limit is None else limit - len(ids)
                ids.extend(_BYTE_OFFSET + b for b in word.encode("utf-8")[:room])
            else:
                ids.append(UNK_ID)
        return ids if limit is None else ids[:limit]

    def _grounded(self, text: str, limit: int | None) -> list[str]:
        """The words of ``text``, or of the training instruction it grounds to (module docstring).
        Only the words that fit in ``limit`` ids decide; a training instruction is read as itself
        (with a capped vocabulary it may hold unknown words too)."""
        words = split_words(text)
        seen = words if limit is None else words[: max(limit - 1, 0)]
        if self.grounding is None or text in self.grounding.tasks or all(w in self._ids for w in seen):
            return words
        target = self.grounding.ground([w for w in seen if w in self._ids])
        return words if target is None else split_words(target)

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> ``(tokens (B, max_len) long, is_pad (B, max_len) bool)``.

        Longer instructions are truncated to ``max_len`` tokens (the words at the end are dropped).
        Without byte fallback an unknown word's UNK is marked as padding too: the model never sees it.
        """
        if isinstance(texts, str):
            raise TypeError("encode expects a list of instructions, not a single string")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        tokens = torch.full((len(texts), max_len), PAD_ID, dtype=torch.long)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"instruction {i} is {type(text).__name__}, not str")
            ids = self.token_ids(text, limit=max_len)
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        hidden = tokens == PAD_ID
        if not self.byte_fallback:
            hidden |= tokens == UNK_ID
        return tokens, hidden

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (words joined by spaces; byte runs re-assembled); for logs and debugging."""
        words: list[str] = []
        pending = bytearray()
        for i in ids:
            i = int(i)
            if _BYTE_OFFSET <= i < FIRST_WORD_ID:
                pending.append(i - _BYTE_OFFSET)
                continue
            if pending:
                words.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if i >= FIRST_WORD_ID and i - FIRST_WORD_ID < len(self.words):
                words.append(self.words[i - FIRST_WORD_ID])
            elif i == UNK_ID:
                words.append("<unk>")
        if pending:
            words.append(pending.decode("utf-8", errors="replace"))
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        state = {"kind": "word", "version": 1, "words": self.words, "byte_fallback": self.byte_fallback}
        if self.grounding is not None:
            state["grounding"] = self.grounding.to_dict()
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TextTokenizer:
        """A tokenizer :meth:`to_dict` saved; tokenizers saved before grounding existed load without it."""
        from vla.model.instruction_grounding import InstructionGrounding

        if state.get("kind") != "word":
            raise ValueError(f"saved text tokenizer has kind {state.get('kind')!r}, expected 'word'")
        grounding = state.get("grounding")
        return cls(
            state["words"],
            byte_fallback=bool(state.get("byte_fallback", True)),
            grounding=None if grounding is None else InstructionGrounding.from_dict(grounding),
        )
