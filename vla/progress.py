"""Progress bars that stay readable in log files.

tqdm redraws up to ten times a second; on a terminal that is one line, in a log file (CI, ``make
demo > log``, a cluster job) it is thousands (the demo wrote 0.5 MB of bar updates). Off a terminal
the bar redraws at most every :data:`LOG_INTERVAL_S` seconds instead (callers pass
``refresh=False`` to ``set_postfix``, which would otherwise redraw at once).
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Any = None, **options: Any) -> Any:
    """``tqdm(iterable, **options)`` (a widget in notebooks), redrawn every :data:`LOG_INTERVAL_S` s
    when writing to something other than a terminal."""
    from tqdm.auto import tqdm

    stream = options.get("file") or sys.stderr
    in_notebook = "notebook" in tqdm.__module__  # a widget, not lines in a file
    if not in_notebook and not getattr(stream, "isatty", lambda: False)():
        options.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(iterable, **options)
