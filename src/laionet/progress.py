"""Progress bars (rows/s and ETA) on stderr, and the end-of-command summary."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, name: str, total: int, initial: int = 0, enabled: bool = True, unit: str = "rows"):
        self._bar = None
        if enabled:  # tqdm is imported only for a bar that shows: a short command starts faster without it
            self._bar = _tqdm()(total=total, initial=initial, desc=name, unit=unit, unit_scale=True,
                                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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
