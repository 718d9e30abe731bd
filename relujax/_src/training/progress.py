"""Progress reporting: a one-line bar on a terminal, plain log lines otherwise (CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports batches of an epoch; `update` is called only at logging points.

    On a TTY it redraws one line (`\\r`); elsewhere, or with `bar=False`, it prints a plain line
    per logging point. Everything goes to `stream` (stderr by default), so stdout stays clean.
    """

    def __init__(self, *, bar: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.bar = isatty if bar is None else (bar and isatty)
        self._start = time.perf_counter()
        self._drawn = False

    def start_epoch(self) -> None:
        self._start = time.perf_counter()

    def update(
        self, epoch: int, epochs: int, batch: int, batches: int, loss: float, acc: float, n: int
    ) -> None:
        """`n` images so far this epoch; loss/acc are the running means."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = n / elapsed
        if self.bar:
            width = 24
            filled = int(width * batch / max(batches, 1))
            line = (
                f"\repoch {epoch}/{epochs} [{'#' * filled}{'.' * (width - filled)}] "
                f"{batch}/{batches} loss {loss:.4f} acc {acc:.4f} {rate:,.0f} img/s"
            )
            self.stream.write(line)
            self._drawn = True
        else:
            self.stream.write(
                f"epoch {epoch}/{epochs} batch {batch}/{batches} loss {loss:.4f} "
                f"acc {acc:.4f} {rate:,.0f} img/s\n"
            )
        self.stream.flush()

    def line(self, text: str) -> None:
        """A full line (ends the bar first)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
