"""The single-writer lock of a store: ``fcntl.flock`` on ``<store>/.vla-writer.lock``.

The kernel drops a flock when its process dies, so a lock left by a killed writer is never stale:
the next writer simply acquires it. The file holds the owner's pid and host for the error message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from vla.data.errors import StoreLockedError

LOCK_NAME = ".vla-writer.lock"


class WriterLock:
    """An exclusive, non-blocking lock on a local store directory."""

    def __init__(self, store_dir: str | Path) -> None:
        self.path = Path(store_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreLockedError` naming the process holding it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"{self.path.parent} is open for writing by another writer (process {holder}); "
                "one writer per store: close it first, or open this one with mode='r'"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def holder(self) -> str | None:
        """Who holds the lock now ("pid N on host"), or None when nobody does (nothing is created)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)  # also drops the shared lock taken just to look
        return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
