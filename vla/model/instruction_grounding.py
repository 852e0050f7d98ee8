"""Reading an instruction with unknown words as the one training instruction it can only mean.

A held-out phrasing ("click the red button") holds words the policy's vocabulary lacks. Hidden,
they leave a fragment ("the red button") the policy never trained on, and which task such a
fragment triggers changed from one training run to the next (README, "What is left"). But the
words it does know may occur together in the training instructions of one task only ("red" and
"button": press-red). Then the instruction is read as the shortest of those training instructions
("hit the red button"), which the policy did train on. When the known words occur together in
the instructions of two tasks or more ("take the red cube off the table" -> "the red cube":
reach, pick, place, push and stack instructions all hold those words), or in none, nothing is
grounded and the unknown words stay hidden: the rule never guesses between tasks.

"Only one task" is the test :class:`vla.train.augment.WordDropout` applies before it hides a word,
here applied to the words a held-out phrasing keeps. The table is built from the training episodes'
instructions and tasks (:meth:`InstructionGrounding.build`) and saved with the text tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vla.model.text_tokenizer import split_words

SHARED = ""  # the task of an instruction that episodes of two tasks or more were recorded with


@dataclass(frozen=True)
class InstructionGrounding:
    """Training instructions and their tasks; :meth:`ground` maps known words to one of them."""

    tasks: Mapping[str, str]  # training instruction -> its task (SHARED when tasks share it)
    _words: tuple[tuple[frozenset[str], int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        split = {text: split_words(text) for text in sorted(self.tasks)}
        object.__setattr__(self, "_words", tuple((frozenset(w), len(w), text) for text, w in split.items()))

    @classmethod
    def build(cls, instructions: Iterable[str], tasks: Iterable[str]) -> InstructionGrounding:
        """From parallel sequences of training instructions and their tasks (one entry per episode)."""
        instructions, tasks = list(instructions), list(tasks)
        if len(instructions) != len(tasks):
            raise ValueError(f"{len(instructions)} instructions but {len(tasks)} tasks")
        task_of: dict[str, str] = {}
        for text, task in zip(instructions, tasks, strict=True):
            if not task:
                raise ValueError(f"instruction {text!r} has an empty task name")
            task_of[text] = task if task_of.get(text, task) == task else SHARED
        return cls(task_of)

    def ground(self, known_words: Sequence[str]) -> str | None:
        """The shortest training instruction holding every word of ``known_words``, when all the
        instructions holding them belong to one task; else None (ties: alphabetical order)."""
        wanted = frozenset(known_words)
        if not wanted:
            return None
        holders = [(length, text) for words, length, text in self._words if wanted <= words]
        tasks = {self.tasks[text] for _, text in holders}
        if len(tasks) != 1 or SHARED in tasks:
            return None
        return min(holders)[1]

    def to_dict(self) -> dict[str, str]:
        return dict(sorted(self.tasks.items()))

    @classmethod
    def from_dict(cls, state: Mapping[str, str]) -> InstructionGrounding:
        if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in state.items()
        ):
            raise ValueError("a saved instruction grounding must map instruction strings to task strings")
        return cls(dict(state))
