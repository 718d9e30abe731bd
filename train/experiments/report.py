"""Table and bar chart of finished runs next to the book's figures.

    python -m train.experiments.report runs/repro --out docs/REPRODUCTION_table.md \
        --plot docs/reproduction.png [--only 'book-*']

Reads each run folder's `summary.json` and `metrics.jsonl` (as written by `python -m train`);
a run folder is named after its preset (e.g. `runs/repro/book-netdepth`). Prints a Markdown
table (model, params, train, val, book train, book val, target, epochs, s/epoch, device) and draws
the book's chart: train vs val accuracy per model, y from 0.7 to 1. An `improved-*` run is shown
with the book's figures for the same model and its val target.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import pathlib
import statistics
import sys
from typing import Any

from train.experiments.book_targets import BOOK, IMPROVED, targets


def load_run(folder: pathlib.Path) -> dict[str, Any] | None:
    """The row of one run folder, or None when it has no metrics yet."""
    metrics_path = folder / "metrics.jsonl"
    if not metrics_path.exists():
        return None
    history = [json.loads(s) for s in metrics_path.read_text().splitlines() if s.strip()]
    if not history:
        return None
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    last = history[-1]
    label, book_params, book_train, book_val, target = targets(folder.name)
    return {
        "run": folder.name,
        "label": label,
        "params": summary.get("parameters"),
        "book_params": book_params,
        "train": last["train_acc"],
        "val": last.get("val_acc"),
        "book_train": book_train,
        "book_val": book_val,
        "target": target,
        "epochs": last["epoch"],
        "epochs_planned": summary.get("config", {}).get("epochs"),
        "s_per_epoch": statistics.median(h["seconds"] for h in history),
        "device": summary.get("device", "?"),
        "finished": summary_path.exists(),
    }


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (from `load_run`)."""
    out = [
        "| run | model | params | train | val | book train | book val | val - book | target "
        "| epochs | s/epoch | device |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        delta = None if r["val"] is None or r["book_val"] is None else r["val"] - r["book_val"]
        epochs = f"{r['epochs']}" + ("" if r["finished"] else " (running)")
        out.append(
            f"| {r['run']} | {r['label']} | {_fmt(r['params'], ',')} | {_fmt(r['train'])} "
            f"| {_fmt(r['val'], '.4f')} | {_fmt(r['book_train'], '.2f')} "
            f"| {_fmt(r['book_val'], '.2f')} "
            f"| {_fmt(delta, '+.4f')} | {_fmt(r['target'], '.2f')} | {epochs} "
            f"| {_fmt(r['s_per_epoch'], '.1f')} | {r['device']} |"
        )
    return "\n".join(out)


def chart(rows: list[dict[str, Any]], path: pathlib.Path, title: str) -> None:
    """The book's bar chart: train and val accuracy per run, y from 0.7 to 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4), constrained_layout=True)
    ax.bar(x - 0.2, [r["train"] for r in rows], 0.4, label="train")
    ax.bar(x + 0.2, [r["val"] or 0 for r in rows], 0.4, label="val")
    book = [(i, r["book_val"]) for i, r in enumerate(rows) if r["book_val"] is not None]
    if book:
        xs = [i + 0.2 for i, _ in book]
        ax.plot(xs, [v for _, v in book], "k_", ms=18, mew=2, label="book val")
    goal = [(i + 0.2, r["target"]) for i, r in enumerate(rows) if r.get("target") is not None]
    if goal:
        ax.plot(*zip(*goal, strict=True), "r_", ms=18, mew=2, label="target val")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right")
    ax.set_ylim(0.7, 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.experiments.report", description=__doc__)
    p.add_argument("runs", type=pathlib.Path, help="folder holding one subfolder per run")
    p.add_argument("--out", type=pathlib.Path, help="write the Markdown table here too")
    p.add_argument("--plot", type=pathlib.Path, help="write the bar chart (PNG) here")
    p.add_argument("--title", default="CIFAR-2: relujax runs vs the book")
    p.add_argument(
        "--only", nargs="+", metavar="PATTERN", help="run folder names to keep (globs: 'book-*')"
    )
    a = p.parse_args(argv)
    if not a.runs.is_dir():
        p.exit(2, f"report: error: runs folder {a.runs} does not exist\n")
    order = [*BOOK, *IMPROVED]
    folders = sorted(
        (f for f in a.runs.iterdir() if f.is_dir()),
        key=lambda f: (order.index(f.name) if f.name in order else len(order), f.name),
    )
    if a.only:
        folders = [f for f in folders if any(fnmatch.fnmatch(f.name, g) for g in a.only)]
    rows = [r for r in map(load_run, folders) if r is not None]
    if not rows:
        p.exit(2, f"report: error: no run with a metrics.jsonl under {a.runs}\n")
    text = table(rows)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.plot:
        chart(rows, a.plot, a.title)
        print(f"chart: {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
