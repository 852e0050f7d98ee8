"""Progress bars: quiet in log files, live on terminals."""

from __future__ import annotations

import io

from vla.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_redraw_rarely_in_log_files_and_normally_on_terminals():
    log, terminal = io.StringIO(), _Terminal()
    for stream, interval in ((log, LOG_INTERVAL_S), (terminal, 0.1)):
        bar = progress_bar(total=1000, file=stream)
        assert bar.mininterval == interval
        for _ in range(1000):
            bar.update(1)
        bar.close()
    assert log.getvalue().count("\r") < 5  # start, end: no redraw per update
    explicit = progress_bar(total=1, file=io.StringIO(), mininterval=1.0)
    assert explicit.mininterval == 1.0
    explicit.close()
