"""Progress on stderr (rows/s and ETA), and the end-of-command summary.

On a terminal (or in Jupyter) progress is a tqdm bar. Elsewhere (a batch job's log file, a pipe) a bar's
carriage-return redraws turn into one long garbled line, so it is a plain line every LOG_EVERY_S seconds
instead, and none at all for a command that ends before the first one is due.
"""

from __future__ import annotations

import sys
import time

LOG_EVERY_S = 30.0


class Progress:
    def __init__(self, name: str, total: int, initial: int = 0, enabled: bool = True, unit: str = "rows"):
        self._bar = None
        if not enabled:
            return
        if _interactive():  # tqdm is imported only for a bar that shows: a short command starts faster
            self._bar = _tqdm()(total=total, initial=initial, desc=name, unit=unit, unit_scale=True,
                                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        else:
            self._bar = LogLines(name, total, initial, unit)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LogLines:
    """Progress as plain lines: `match: 1,200,000/4,000,000 rows (30 %), 41,000 rows/s, ETA 0:01:08`."""

    def __init__(self, name: str, total: int, initial: int = 0, unit: str = "rows", every: float = LOG_EVERY_S,
                 clock=time.monotonic, out=None):
        self.name, self.total, self.unit, self.every, self.clock = name, total, unit, every, clock
        self.out = out if out is not None else sys.stderr
        self.done = self.initial = initial
        self.started = self.last_line = clock()
        self.lines = 0

    def update(self, n: int) -> None:
        self.done += n
        if self.clock() - self.last_line >= self.every:
            self._line()

    def close(self) -> None:
        if self.lines and self.done > self.initial:  # a short run stays quiet: its summary says it all
            self._line()

    def _line(self) -> None:
        now = self.last_line = self.clock()
        rate = (self.done - self.initial) / max(now - self.started, 1e-9)
        text = f"{self.name}: {self.done:,}/{self.total:,} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f} %)"
        text += f", {rate:,.0f} {self.unit}/s"
        if rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        print(text, file=self.out, flush=True)
        self.lines += 1


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _interactive() -> bool:
    if "IPython" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _tqdm():
    """tqdm's notebook bar inside Jupyter (IPython loaded), else the plain one: `tqdm.auto` would import
    asyncio even on a terminal."""
    if "IPython" in sys.modules:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
