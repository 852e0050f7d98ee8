"""handling_signals: the one primitive that swaps signal handlers for a block and restores them."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from vla.signals import handling_signals


def test_the_handler_runs_inside_the_block_and_the_old_ones_come_back():
    seen = []
    with handling_signals(
        lambda signum, _frame: seen.append(signum), (signal.SIGINT, signal.SIGUSR1)
    ) as installed:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the block's handler takes it
    assert installed is True
    assert seen == [signal.SIGUSR1, signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_the_old_handlers_come_back_when_the_block_raises():
    def ignore(_signum, _frame):
        pass

    previous = signal.signal(signal.SIGUSR1, ignore)
    try:
        with (
            pytest.raises(RuntimeError, match="inside"),
            handling_signals(lambda *_: None, (signal.SIGUSR1,)),
        ):
            assert signal.getsignal(signal.SIGUSR1) is not ignore
            raise RuntimeError("inside")
        assert signal.getsignal(signal.SIGUSR1) is ignore
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_bad_signal_number_restores_the_ones_already_swapped():
    with pytest.raises(OSError), handling_signals(lambda *_: None, (signal.SIGUSR1, signal.SIGKILL)):
        pytest.fail("SIGKILL cannot be handled: the block must not run")
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_outside_the_main_thread_nothing_is_installed():
    result = []

    def body():
        with handling_signals(lambda *_: None, (signal.SIGINT,)) as installed:
            result.append((installed, signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert result == [(False, signal.default_int_handler)]
