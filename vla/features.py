"""Feature names shared by every part of the stack.

They follow LeRobot's conventions so stores, policies and converters agree on one vocabulary:
cameras are ``observation.images.<camera>``, proprioception is ``observation.state`` and the
commanded action is ``action``. The language instruction is per-episode text.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from fnmatch import fnmatchcase

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
INSTRUCTION_KEY = "instruction"


def camera_key(camera: str) -> str:
    """The feature name of camera ``camera``."""
    return IMAGE_PREFIX + camera


def is_image_key(key: str) -> bool:
    """Whether ``key`` names a camera feature."""
    return key.startswith(IMAGE_PREFIX)


def camera_name(key: str) -> str:
    """The camera name inside an image feature name (``observation.images.front`` -> ``front``)."""
    if not is_image_key(key):
        raise ValueError(f"{key!r} is not an image feature (expected the prefix {IMAGE_PREFIX!r})")
    return key[len(IMAGE_PREFIX) :]


def kept_state_indices(names: Sequence[str] | None, exclude: Sequence[str]) -> list[int] | None:
    """Indices of the state entries a policy reads: all (None) unless ``exclude`` lists shell-style
    patterns of names to drop (``["*.vel"]``). Why a policy may drop some: joint velocities
    carry the previous action, and a policy that reads them learns to continue whatever motion it
    sees (the "copycat" failure of behaviour cloning) instead of looking where to go.

    A pattern that matches no entry is warned about, not refused: one policy file serves several
    suites (``tiny128`` drops the tabletop's joint velocities; Meta-World's state has none)."""
    if not exclude:
        return None
    if names is None:
        raise ValueError(f"state_exclude={list(exclude)} needs named state entries; the state has no names")
    kept = [i for i, name in enumerate(names) if not any(fnmatchcase(name, p) for p in exclude)]
    unused = [p for p in exclude if not any(fnmatchcase(n, p) for n in names)]
    if unused:
        warnings.warn(f"state_exclude patterns {unused} match no state entry of {list(names)}", stacklevel=2)
    return kept
