"""How a ``vla`` subcommand reports bad input: one line on stderr, a non-zero exit status, no traceback.

Every subcommand's ``main`` is wrapped by :func:`cli_main`, so the same rules hold whether it runs
from ``vla <command>`` or is called in-process (tests, ``vla demo``):

- :class:`ConfigError` (a bad ``key=value`` argument or config file) -> ``vla <command>: <message>``,
  exit status 2;
- an error the user can act on -> the same one line, exit status 1: the project's own error types
  (``vla.*``: a corrupt or locked store, a missing checkpoint, features that do not fit), an
  ``OSError`` (a missing file, a port in use, a server that does not answer), a ``websockets`` error,
  or a ``ValueError``/``KeyError`` raised by ``vla`` code itself (its input checks);
- ``KeyboardInterrupt`` -> ``vla <command>: interrupted``, exit status 130;
- anything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` (Hydra's switch) shows
  the traceback of every error.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Top-level packages whose exceptions describe the user's input or environment, not a bug.
USER_ERROR_PACKAGES = ("vla", "websockets")
_VLA_DIR = str(Path(__file__).resolve().parent)

Main = Callable[[Sequence[str]], int | None]


class ConfigError(ValueError):
    """A command-line argument or config file that cannot be used; the message names it."""


def cli_main(command: str) -> Callable[[Main], Callable[..., int]]:
    """Decorate the ``main(argv)`` of ``vla <command>`` with the reporting rules of this module."""

    def decorate(main: Main) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return int(main(list(argv or [])) or 0)
            except KeyboardInterrupt:
                print(f"vla {command}: interrupted", file=sys.stderr)
                return 130
            except Exception as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1" or not is_user_error(exc):
                    raise
                print(f"vla {command}: {one_line(exc)}", file=sys.stderr)
                status = 2 if isinstance(exc, ConfigError) else 1
            # The error's frames are gone now; collect the cycles they held (a DataLoader's worker
            # processes and queues) while the interpreter still runs, not in a noisy shutdown.
            gc.collect()
            return status

        return run

    return decorate


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is about the input or the environment (reported in one line), not a bug."""
    if isinstance(exc, OSError):
        return True
    if type(exc).__module__.split(".")[0] in USER_ERROR_PACKAGES:
        return True
    return isinstance(exc, ValueError | KeyError) and _raised_in_vla(exc)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line.

    An error re-raised from a worker process (a DataLoader worker: "Caught X in DataLoader worker
    ... Original Traceback ...") keeps only the original message, its last line.
    """
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "Traceback (most recent call last)" in text:
        name, sep, message = lines[-1].partition(": ")
        return message if sep and name.replace(".", "").replace("_", "").isalnum() else lines[-1]
    return "; ".join(lines)


def _raised_in_vla(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in the vla package (a deliberate check)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_VLA_DIR)
