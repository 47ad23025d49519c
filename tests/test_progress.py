"""Progress off a terminal: plain lines at intervals, none for a short run."""

from __future__ import annotations

import io

from laionet.progress import LogLines, Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_log_lines_at_intervals_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    log = LogLines("match", 4_000_000, initial=1_000_000, every=30, clock=clock, out=out)
    clock.now = 10
    log.update(500_000)
    assert out.getvalue() == ""  # not due yet
    clock.now = 30
    log.update(500_000)  # 1,000,000 rows in 30 s since the start; 2,000,000 left
    assert out.getvalue() == "match: 2,000,000/4,000,000 rows (50 %), 33,333 rows/s, ETA 0:01:00\n"
    clock.now = 45
    log.update(2_000_000)
    log.close()
    assert out.getvalue().splitlines()[-1] == "match: 4,000,000/4,000,000 rows (100 %), 66,667 rows/s"


def test_a_short_run_prints_no_progress_lines():
    clock, out = Clock(), io.StringIO()
    log = LogLines("score", 243, clock=clock, out=out)
    clock.now = 6
    log.update(243)
    log.close()
    assert out.getvalue() == ""


def test_off_a_terminal_progress_is_log_lines(capsys):
    bar = Progress("match", 10)  # pytest's captured stderr is no terminal
    bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""
    assert isinstance(bar._bar, LogLines)
