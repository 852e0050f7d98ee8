"""Swap the process's handlers for some signals for the length of a block, then put the old ones back.

The one primitive behind the project's three uses, each of which only chooses the handler:
:func:`vla.data.interrupts.signals_held` (a store's commit point waits for Ctrl-C and SIGTERM),
:func:`vla.envs.record_workers.sigterm_exits` (``vla record`` exits 143 on SIGTERM, through its
clean-up) and :func:`vla.deploy.safety.stop_on_signals` (a control loop polls a stop flag).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

SignalHandler = Callable[[int, FrameType | None], Any]


@contextlib.contextmanager
def handling_signals(handler: SignalHandler, signums: Iterable[int]) -> Iterator[bool]:
    """Within the block, ``handler`` handles each of ``signums``; when it ends, however it ends, the
    handlers in place before are restored.

    Yields True when the handlers were installed. Python installs handlers from the main thread only
    (and runs them there), so in any other thread the block runs with the process's handlers
    untouched and yields False.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous: dict[int, Any] = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, handler)
        yield True
    finally:
        for signum, old in previous.items():
            # None: a handler installed outside Python; the default is the closest we can restore.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
