"""signals_held: Ctrl-C and SIGTERM wait for the end of the block, then arrive once each."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from vla.data.interrupts import signals_held


def test_ctrl_c_inside_the_block_arrives_when_it_ends():
    done = []
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # twice: still one KeyboardInterrupt, after the block
        done.append("work")
    assert done == ["work"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_handlers_are_restored_and_each_held_signal_reaches_its_own():
    seen = []

    def record(signum, _frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is record
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_the_block_runs_unchanged():
    result = []

    def body():
        with signals_held():
            result.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert result == [signal.default_int_handler]
