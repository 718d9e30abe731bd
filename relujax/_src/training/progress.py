"""Progress reporting: a `rich` bar on a terminal, plain log lines otherwise (pipes, files, CI)."""

from __future__ import annotations

import sys
import time
import weakref
from typing import Any, TextIO


class Progress:
    """Reports the batches of an epoch; `update` is called only at logging points.

    On a terminal (and with `bar` not False) a `rich` progress bar shows the epoch's batches with
    the running loss, accuracy, images/s and the time left; full lines (`line`) print above it.
    Elsewhere, or with `bar=False`, it prints one plain line per logging point. Everything goes to
    `stream` (stderr by default), so stdout stays clean.

    The loop reads the metrics (a device sync) only at logging points, so the bar is redrawn
    there (no refresh thread runs during training), and its ETA is rich's estimate from those
    updates.
    """

    def __init__(self, *, bar: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.bar = isatty if bar is None else (bar and isatty)
        self._start = time.perf_counter()
        self._live: Any = None  # rich.progress.Progress while an epoch's bar is shown
        self._task: Any = None

    def start_epoch(self) -> None:
        self._start = time.perf_counter()

    def update(
        self, epoch: int, epochs: int, batch: int, batches: int, loss: float, acc: float, n: int
    ) -> None:
        """`n` images so far this epoch; loss/acc are the running means."""
        rate = n / max(time.perf_counter() - self._start, 1e-9)
        if self.bar:
            self._draw(epoch, epochs, batch, batches, loss, acc, rate)
            return
        self.stream.write(
            f"epoch {epoch}/{epochs} batch {batch}/{batches} loss {loss:.4f} "
            f"acc {acc:.4f} {rate:,.0f} img/s\n"
        )
        self.stream.flush()

    def line(self, text: str) -> None:
        """A full line; it ends the epoch's bar first."""
        self._close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(
        self,
        epoch: int,
        epochs: int,
        batch: int,
        batches: int,
        loss: float,
        acc: float,
        rate: float,
    ) -> None:
        fields = {"loss": loss, "acc": acc, "rate": rate}
        if self._live is None:
            self._live = _rich_progress(self.stream)
            desc = f"epoch {epoch}/{epochs}"
            self._task = self._live.add_task(desc, total=batches, completed=batch, **fields)
            self._live.start()  # draws the bar
            # A run that ends by an exception never prints its epoch line: stop the bar (and give
            # the terminal its cursor back) at exit at the latest.
            self._finalizer = weakref.finalize(self, self._live.stop)
            return
        self._live.update(self._task, completed=batch, **fields)
        self._live.refresh()

    def _close(self) -> None:
        if self._live is not None:
            self._finalizer.detach()
            self._live.stop()
            self._live = self._task = None


def _rich_progress(stream: TextIO) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}"),
        TextColumn("{task.fields[rate]:,.0f} img/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=stream),
        auto_refresh=False,
        transient=True,
        # stdout stays the caller's (the application prints its summary there); stray stderr
        # output (warnings) is printed above the bar instead of breaking it.
        redirect_stdout=False,
    )
