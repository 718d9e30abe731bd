"""Guards of a training run: labels that fit the model, outputs that fail to write."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from relujax._src.training.checkpoint import Checkpointer
from relujax._src.training.config import ConfigError


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
