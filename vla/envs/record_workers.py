"""The worker processes of ``vla record`` and their lifetime: no worker outlives the writer.

However the writer (the main process) ends, its workers end too:

- an exception or Ctrl-C in the writer: :func:`stop_workers` terminates them at once (the episodes
  in flight are lost either way; committed ones are kept);
- SIGTERM: :func:`sigterm_exits` turns it into ``SystemExit(143)`` in the writer, so the same
  clean-up runs (workers stopped, the store's writer lock released) and the exit status is the
  one shells expect;
- the writer killed outright (SIGKILL, OOM): each worker watches its parent
  (:func:`vla.envs.record_rollout.init_worker`) and exits once it is gone; a worker blocked waiting
  for work would otherwise wait forever on a pipe nobody writes to.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from vla.envs import registry
from vla.envs.record_rollout import init_worker
from vla.signals import handling_signals


def start_workers(count: int, env_cfg: Mapping[str, Any], noise: float) -> ProcessPoolExecutor:
    """``count`` spawn workers that record episodes of ``env_cfg``'s tasks and watch this process."""
    # spawn, never fork: a GL (EGL/OSMesa) context does not survive fork(), and a child that renders
    # with the one it inherited hangs.
    context = mp.get_context("spawn")
    init_args = (dict(registry.SUITES), dict(env_cfg), float(noise), os.getpid())
    return ProcessPoolExecutor(count, context, init_worker, init_args)


def stop_workers(executor: Any) -> None:
    """End the pool's workers now, without waiting for the episodes they are recording."""
    executor.shutdown(wait=False, cancel_futures=True)
    # CPython's pool keeps its processes by pid (Python 3.14 adds terminate_workers() for this).
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5.0)
        if process.is_alive():
            process.kill()


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` in the main thread (elsewhere: no change)."""

    def exit_143(_signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signal.SIGTERM)

    with handling_signals(exit_143, (signal.SIGTERM,)):
        yield
