"""Hold Ctrl-C and SIGTERM until a store's commit point is written: a commit lands whole or not at all.

Why it is needed: zarr writes on its own IO thread, and an exception raised in the main thread while
it waits does not stop that write. An interrupted commit record could then land after the writer's
clean-up had truncated the arrays to the old end, leaving a store that claims frames it no longer
holds (seen once in CI: "10 frames stored, 20 committed" after a SIGINT).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from vla.signals import handling_signals

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held(signums: tuple[signal.Signals, ...] = HELD_SIGNALS) -> Iterator[None]:
    """Within the block, ``signums`` are recorded instead of handled; when it ends, the handlers in
    place before are restored and each signal received is raised again, once, in arrival order.

    Python runs signal handlers in the main thread only, so elsewhere nothing can interrupt the
    block and it runs unchanged.
    """
    received: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        if signum not in received:
            received.append(signum)

    try:
        with handling_signals(hold, signums):
            yield
    finally:
        for signum in received:  # the old handlers are back: each signal now reaches its own
            signal.raise_signal(signum)
