"""Progress bars (rows/s and ETA) on stderr, and the end-of-command summary."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    def __init__(self, name: str, total: int, initial: int = 0, enabled: bool = True, unit: str = "rows"):
        self._bar = tqdm(total=total, initial=initial, desc=name, unit=unit, unit_scale=True,
                         disable=not enabled, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
