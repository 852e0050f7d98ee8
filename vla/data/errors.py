"""Errors raised by the trajectory store. Each names what went wrong and where."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every trajectory-store error."""


class SchemaError(StoreError, ValueError):
    """A schema or feature specification is malformed."""


class FrameError(StoreError, ValueError):
    """A frame does not match the schema; nothing of it was written.

    ``feature`` names the offending feature (None when the problem is not one feature's) and
    ``frame_index`` is the frame's position in the episode being written.
    """

    def __init__(self, feature: str | None, frame_index: int, problem: str) -> None:
        self.feature = feature
        self.frame_index = frame_index
        self.problem = problem
        where = f"feature {feature!r}, " if feature is not None else ""
        super().__init__(f"{where}frame {frame_index}: {problem}")


class StoreLockedError(StoreError, RuntimeError):
    """Another live process holds the store's writer lock."""


class StoreCorruptError(StoreError, RuntimeError):
    """The store cannot be opened: its metadata is missing or inconsistent."""


class EpisodeStateError(StoreError, RuntimeError):
    """A writer call came in the wrong order (a frame with no episode started, ...)."""
