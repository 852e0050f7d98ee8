"""Feature names shared by every part of the stack.

They follow LeRobot's conventions so stores, policies and converters agree on one vocabulary:
cameras are ``observation.images.<camera>``, proprioception is ``observation.state`` and the
commanded action is ``action``. The language instruction is per-episode text.
"""

from __future__ import annotations

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
