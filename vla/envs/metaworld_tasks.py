"""The Meta-World task catalogue: names, the MT10/MT50 sets and the difficulty splits.

Kept free of any Meta-World or MuJoCo import so that listing tasks (``vla record`` planning, eval
reports) costs nothing. Canonical task names are Meta-World's own ids (``reach-v3``); the short form
without the version suffix (``reach``) is accepted everywhere a name is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

VERSION_SUFFIX = "-v3"

# The difficulty split SmolVLA's paper uses: 28 easy, 11 medium, 6 hard, 5 very hard = all 50.
DIFFICULTY_SPLITS: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press", "button-press-topdown", "button-press-topdown-wall", "button-press-wall",
        "coffee-button", "dial-turn", "door-close", "door-lock", "door-open", "door-unlock",
        "drawer-close", "drawer-open", "faucet-close", "faucet-open", "handle-press",
        "handle-press-side", "handle-pull", "handle-pull-side", "lever-pull", "plate-slide",
        "plate-slide-back", "plate-slide-back-side", "plate-slide-side", "reach", "reach-wall",
        "window-close", "window-open", "peg-unplug-side",
    ),
    "medium": (
        "basketball", "bin-picking", "box-close", "coffee-pull", "coffee-push", "hammer",
        "peg-insert-side", "push-wall", "soccer", "sweep", "sweep-into",
    ),
    "hard": ("assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back"),
    "very_hard": ("shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall"),
}  # fmt: skip

# Meta-World's MT10 benchmark, in its own order.
MT10: tuple[str, ...] = (
    "reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close",
    "button-press-topdown", "peg-insert-side", "window-open", "window-close",
)  # fmt: skip

# All 50 tasks in alphabetical order (Meta-World's MT50 order).
ALL_TASKS: tuple[str, ...] = tuple(
    sorted(name + VERSION_SUFFIX for names in DIFFICULTY_SPLITS.values() for name in names)
)

_DIFFICULTY_OF: dict[str, str] = {
    name + VERSION_SUFFIX: split for split, names in DIFFICULTY_SPLITS.items() for name in names
}

# Named selections: set name -> its tasks (canonical names).
TASK_SETS: dict[str, tuple[str, ...]] = {
    "MT10": tuple(name + VERSION_SUFFIX for name in MT10),
    "MT50": ALL_TASKS,
    **{split: tuple(n + VERSION_SUFFIX for n in names) for split, names in DIFFICULTY_SPLITS.items()},
}


def canonical_task(name: str) -> str:
    """``reach`` or ``reach-v3`` -> ``reach-v3``; an unknown name raises a ValueError listing the sets."""
    full = name if name.endswith(VERSION_SUFFIX) else name + VERSION_SUFFIX
    if full not in _DIFFICULTY_OF:
        raise ValueError(
            f"unknown Meta-World task {name!r}; use one of the 50 task names (e.g. 'reach-v3') "
            f"or a set name {sorted(TASK_SETS)}"
        )
    return full


def task_names(selection: str | Sequence[str] | None = None) -> list[str]:
    """The tasks ``selection`` names: ``None`` (all 50), a set name (``MT10``, ``MT50``, ``easy``,
    ``medium``, ``hard``, ``very_hard``), one task name, or a list mixing task and set names.
    Duplicates are dropped; order is kept.
    """
    if selection is None:
        return list(ALL_TASKS)
    items: Iterable[str] = [selection] if isinstance(selection, str) else selection
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"task selections are names, got {item!r} ({type(item).__name__})")
        names.extend(TASK_SETS[item] if item in TASK_SETS else [canonical_task(item)])
    return list(dict.fromkeys(names))


def difficulty(task: str) -> str:
    """The difficulty split of ``task``: ``easy``, ``medium``, ``hard`` or ``very_hard``."""
    return _DIFFICULTY_OF[canonical_task(task)]
