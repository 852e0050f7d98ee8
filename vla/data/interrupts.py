"""Hold Ctrl-C and SIGTERM until a store's commit point is written: a commit lands whole or not at all.

Why it is needed: zarr writes on its own IO thread, and an exception raised in the main thread while
it waits does not stop that write. An interrupted commit record could then land after the writer's
clean-up had truncated the arrays to the old end, leaving a store that claims frames it no longer
holds (seen once in CI: "10 frames stored, 20 committed" after a SIGINT).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held(signums: tuple[signal.Signals, ...] = HELD_SIGNALS) -> Iterator[None]:
    """Within the block, ``signums`` are recorded instead of handled; when it ends, the handlers in
    place before are restored and each signal received is raised again, once, in arrival order.

    Python runs signal handlers in the main thread only, so elsewhere nothing can interrupt the
    block and it runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        if signum not in received:
            received.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler installed outside Python; the default is the closest we can restore.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in received:
            signal.raise_signal(signum)
