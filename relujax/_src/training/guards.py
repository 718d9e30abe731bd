"""Guards of a training run: labels that fit the model, a loss that diverges, outputs that fail
to write, SIGINT/SIGTERM that stop it."""

from __future__ import annotations

import contextlib
import pathlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from relujax._src.training.checkpoint import Checkpointer
from relujax._src.training.config import ConfigError


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(Exception):  # noqa: N818 (not an error: a requested stop)
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `signum` says which signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """Within the block, SIGINT/SIGTERM set `flag["signum"]` instead of stopping the process."""
    flag: dict[str, int] = {}

    def handler(signum: int, frame: Any) -> None:
        del frame
        flag.setdefault("signum", signum)

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no handlers, nothing to restore
        yield flag
        return
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def stopped(signum: int, ckpt: Checkpointer, epoch: int, batch: int) -> Interrupted:
    """The Interrupted of `signum` once the checkpoint at (`epoch`, `batch`) is saved."""
    name = signal.Signals(signum).name
    where = f"in epoch {epoch + 1} after batch {batch}" if batch else f"after epoch {epoch}"
    return Interrupted(
        signum,
        f"{name}: saved a checkpoint {where} in {ckpt.directory}; continue with the same "
        "command and --resume",
    )


class WriteError(RuntimeError):
    """A checkpoint, metrics.jsonl, summary.json or curves.png could not be written (disk full,
    read-only filesystem, ...); the run stopped and the last good checkpoint is kept."""


def check_labels(ds: Any) -> None:
    """ConfigError for labels outside [0, num_classes): the loss would silently use garbage."""
    for split in ("train", "test"):
        y = np.asarray(getattr(ds, f"y_{split}"))
        if y.size and (
            not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= ds.num_classes
        ):
            bad = y.min() if y.min() < 0 else y.max()
            bad = int(bad) if np.issubdtype(y.dtype, np.integer) else float(bad)
            raise ConfigError(
                f"--dataset {ds.name}: y_{split} must hold integer labels in "
                f"[0, {ds.num_classes}) (num_classes={ds.num_classes}), got {bad!r} "
                f"(dtype {y.dtype}); fix the labels or the dataset's num_classes"
            )


def why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def kept(ckpt: Checkpointer) -> str:
    last = ckpt.latest_step()
    if last is None:
        return "No checkpoint was written yet."
    return (
        f"The last good checkpoint is step {last}; free space (or make the workdir writable) "
        "and continue with --resume."
    )


def write_or_stop(path: pathlib.Path, ckpt: Checkpointer, write: Callable[[], Any]) -> None:
    try:
        write()
    except OSError as e:
        raise WriteError(f"could not write {path} ({why(e)}); stopped. {kept(ckpt)}") from e
