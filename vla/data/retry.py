"""The one retry policy of store reads.

A concurrent writer replaces a shard file atomically, but a reader can still meet a checksum that
does not match (the index read before the rewrite, the chunk bytes after it, or a non-atomic copy
caught mid-way). The committed rows are the same in the new file, so reading again succeeds; a
read that fails every time is real corruption. A read that already diagnosed the store (a
:class:`~vla.data.errors.StoreError`, e.g. a missing chunk) is never retried: reading again cannot
make a deleted file come back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from vla.data.errors import StoreError

READ_RETRIES = 4
RETRY_DELAY_S = 0.005  # times the attempt number: 5, 10, 15 ms

T = TypeVar("T")


def with_read_retries(read: Callable[[], T], transient: tuple[type[Exception], ...]) -> T:
    """``read()``, called again (up to :data:`READ_RETRIES` times in all) while it raises ``transient``.

    The last ``transient`` error propagates; the caller turns it into an error naming the chunk.
    """
    for attempt in range(READ_RETRIES):
        try:
            return read()
        except StoreError:
            raise
        except transient:
            if attempt == READ_RETRIES - 1:
                raise
            time.sleep(RETRY_DELAY_S * (attempt + 1))
    raise AssertionError("unreachable")
