"""What a run leaves in its workdir: metrics.jsonl, summary.json and curves.png.

Every file is replaced atomically (written beside, fsynced, then renamed), so an interrupted or
failed write (kill -9, a full disk) leaves the previous file whole: metrics.jsonl never holds a
partial line. It is rewritten from the checkpoint's history on resume.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a signal: the old file stays whole, no stray temp
        tmp.unlink(missing_ok=True)
        raise


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, Mapping):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def write_metrics(workdir: str | pathlib.Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Writes metrics.jsonl: one JSON object per epoch of `history`."""
    lines = "".join(json.dumps(_json_safe(dict(h)), sort_keys=False) + "\n" for h in history)
    _atomic_write(pathlib.Path(workdir) / "metrics.jsonl", lines.encode())


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The epochs recorded in `workdir`/metrics.jsonl (empty if there is none).

    Example:
        >>> import tempfile
        >>> from relujax.training import read_metrics, write_metrics
        >>> d = tempfile.mkdtemp()
        >>> write_metrics(d, [{"epoch": 1, "val_acc": 0.5}])
        >>> read_metrics(d)
        [{'epoch': 1, 'val_acc': 0.5}]
    """
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_summary(workdir: str | pathlib.Path, summary: Mapping[str, Any]) -> None:
    """Writes summary.json (pretty-printed)."""
    text = json.dumps(_json_safe(dict(summary)), indent=2) + "\n"
    _atomic_write(pathlib.Path(workdir) / "summary.json", text.encode())


def summarize(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Best and final accuracies and losses of `history` (the metrics.jsonl records)."""
    if not history:
        return {"epochs_done": 0}
    last = history[-1]
    with_val = [h for h in history if h.get("val_acc") is not None]
    out: dict[str, Any] = {
        "epochs_done": last["epoch"],
        "final_train_loss": last["train_loss"],
        "final_train_acc": last["train_acc"],
        "final_val_loss": with_val[-1]["val_loss"] if with_val else None,
        "final_val_acc": with_val[-1]["val_acc"] if with_val else None,
        "train_seconds": sum(h.get("seconds", 0.0) for h in history),
    }
    if with_val:
        best = max(with_val, key=lambda h: h["val_acc"])
        out["best_val_acc"] = best["val_acc"]
        out["best_epoch"] = best["epoch"]
    return out


def plot_curves(workdir: str | pathlib.Path, history: Sequence[Mapping[str, Any]]) -> pathlib.Path:
    """Draws curves.png: loss and accuracy per epoch, train and val. Returns its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = pathlib.Path(workdir) / "curves.png"
    epochs = [h["epoch"] for h in history]
    val = [h for h in history if h.get("val_acc") is not None]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", ms=3, label="train")
        ax.plot([h["epoch"] for h in val], [h[f"val_{key}"] for h in val], "s-", ms=3, label="val")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    tmp = path.with_name(f".curves.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
