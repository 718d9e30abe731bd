"""Table and plots of the activation study (`python -m train.experiments.study`).

    python -m train.experiments.study_report runs/study --out docs/study

Reads every `<model>-<activation>-s<seed>` run folder (metrics.jsonl, summary.json) and writes to
`--out`: `table.md` (per model and activation: seeds, final and best val accuracy as mean
and spread over seeds, final train accuracy, seconds per epoch, the last epoch's mean flat
fraction and dead-channel fraction over the activation layers), `val.png` (val accuracy per
epoch), and `dead_<model>.png` (per activation: the flat fraction and the dead-channel fraction
of every activation layer over training, one line per layer, layers whose dead-channel fraction
ends above 5% named). `--dead-plot RUN... --out DIR` draws the same panels for any run folders.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys
from typing import Any

_NAME = re.compile(r"^(?P<model>[a-z0-9]+)-(?P<act>[a-z_0-9]+)-s(?P<seed>\d+)$")


def load(folder: pathlib.Path) -> dict[str, Any] | None:
    """One run: its key and per-epoch history, or None when it is not a study run or empty."""
    m = _NAME.match(folder.name)
    path = folder / "metrics.jsonl"
    if m is None or not path.exists():
        return None
    history = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    history = [h for h in history if "epoch" in h and "train_acc" in h]
    if not history:
        return None
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {
        "model": m["model"],
        "act": m["act"],
        "seed": int(m["seed"]),
        "history": history,
        "summary": summary,
        "finished": summary_path.exists(),
    }


def _layer_means(record: dict[str, Any]) -> tuple[float | None, float | None]:
    layers = record.get("dead_units") or {}
    if not layers:
        return None, None
    flat = statistics.fmean(v["flat"] for v in layers.values())
    dead = statistics.fmean(v["dead_channels"] for v in layers.values())
    return flat, dead


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, activation), seeds pooled, in the order the runs are given."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["act"]), []).append(r)
    out = []
    for (model, act), rs in groups.items():
        last = [r["history"][-1] for r in rs]
        flats, deads = zip(*(_layer_means(h) for h in last), strict=True)
        out.append(
            {
                "model": model,
                "act": act,
                "seeds": len(rs),
                "finished": sum(r["finished"] for r in rs),
                "epochs": min(h["epoch"] for h in last),
                "val": [h["val_acc"] for h in last if h.get("val_acc") is not None],
                "best": [max(x.get("val_acc") or 0 for x in r["history"]) for r in rs],
                "train": [h["train_acc"] for h in last],
                "s_epoch": statistics.median(x["seconds"] for r in rs for x in r["history"]),
                "flat": [f for f in flats if f is not None],
                "dead": [d for d in deads if d is not None],
            }
        )
    return out


def table(rs: list[dict[str, Any]]) -> str:
    """The study's Markdown table."""
    out = [
        "| model | activation | seeds | epochs | val (final) | val (best) | train | s/epoch "
        "| flat fraction | dead channels |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rs:
        running = "" if r["finished"] == r["seeds"] else " (running)"
        out.append(
            f"| {r['model']} | {r['act']} | {r['seeds']} | {r['epochs']}{running} "
            f"| {_ms(r['val'])} | {_ms(r['best'])} | {_ms(r['train'])} | {r['s_epoch']:.1f} "
            f"| {_ms(r['flat'])} | {_ms(r['dead'])} |"
        )
    return "\n".join(out)


def plot_val(runs: list[dict[str, Any]], path: pathlib.Path) -> None:
    """Val accuracy per epoch, one panel per model, one colour per activation (seeds overlaid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in runs))
    acts = list(dict.fromkeys(r["act"] for r in runs))
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(acts)}
    fig, axes = plt.subplots(
        1, len(models), figsize=(5.5 * len(models), 4), squeeze=False, constrained_layout=True
    )
    for ax, model in zip(axes[0], models, strict=True):
        seen = set()
        for r in runs:
            if r["model"] != model:
                continue
            ep = [h["epoch"] for h in r["history"]]
            val = [h.get("val_acc") for h in r["history"]]
            label = None if r["act"] in seen else r["act"]
            seen.add(r["act"])
            ax.plot(ep, val, color=colours[r["act"]], label=label, lw=1.3)
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val accuracy")
        ax.set_ylim(0.7, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_dead(runs: list[dict[str, Any]], model: str, path: pathlib.Path) -> None:
    """Per activation: flat fraction (top) and dead-channel fraction (bottom) of each layer."""
    mine = [r for r in runs if r["model"] == model and r["seed"] == min(x["seed"] for x in runs)]
    title = f"{model}: one line per activation layer (colour: order in the model's attributes)"
    plot_dead_columns(mine, path, title)


def plot_dead_columns(mine: list[dict[str, Any]], path: pathlib.Path, title: str) -> None:
    """One column per run (titled by its "act"): flat and dead-channel fractions per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not mine or not mine[0]["history"][-1].get("dead_units"):
        return
    fig, axes = plt.subplots(
        2,
        len(mine),
        figsize=(2.3 * len(mine) + 1, 4.6),
        sharey="row",
        squeeze=False,
        constrained_layout=True,
    )
    for col, r in enumerate(mine):
        layers = list(r["history"][-1]["dead_units"])
        cmap = plt.get_cmap("viridis")
        ep = [h["epoch"] for h in r["history"]]
        for i, layer in enumerate(layers):
            colour = cmap(0.9 * (1 - i / max(len(layers) - 1, 1)))
            for row, key in enumerate(("flat", "dead_channels")):
                ys = [h.get("dead_units", {}).get(layer, {}).get(key) for h in r["history"]]
                axes[row, col].plot(ep, ys, color=colour, lw=1)
                if key == "dead_channels" and ys and (ys[-1] or 0) > 0.05:  # name dying layers
                    axes[row, col].annotate(
                        layer, (ep[-1], ys[-1]), fontsize=7, ha="right", va="bottom"
                    )
        axes[0, col].set_title(r["act"], fontsize=10)
        axes[1, col].set_xlabel("epoch")
    axes[0, 0].set_ylabel("flat fraction\n(|f'(x)| < 1e-3)")
    axes[1, 0].set_ylabel("dead channels\n(flat on a whole batch)")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.experiments.study_report", description=__doc__
    )
    p.add_argument(
        "runs", nargs="?", type=pathlib.Path, help="folder holding the study's run folders"
    )
    p.add_argument("--out", type=pathlib.Path, help="folder for table.md and the plots")
    p.add_argument(
        "--dead-plot",
        nargs="+",
        type=pathlib.Path,
        metavar="RUN",
        help="instead: plot the dead-unit panels of these run folders (any name) to --out/dead.png",
    )
    a = p.parse_args(argv)
    if a.dead_plot:
        if a.out is None:
            p.error("--dead-plot needs --out")
        runs = []
        for folder in a.dead_plot:
            path = folder / "metrics.jsonl"
            if not path.exists():
                p.error(f"--dead-plot: {path} does not exist")
            history = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            runs.append({"act": folder.name, "history": history})
        a.out.mkdir(parents=True, exist_ok=True)
        title = "one line per activation layer (layers with > 5% dead channels named)"
        plot_dead_columns(runs, a.out / "dead.png", title)
        print(f"written: {a.out}/dead.png")
        return 0
    if a.runs is None or not a.runs.is_dir():
        p.exit(2, f"study_report: error: runs folder {a.runs} does not exist\n")
    from train.experiments.study import STUDY_ACTIVATIONS

    order = {act: i for i, act in enumerate(STUDY_ACTIVATIONS)}
    runs = [r for r in map(load, sorted(a.runs.iterdir())) if r is not None]
    runs.sort(key=lambda r: (r["model"], order.get(r["act"], len(order)), r["act"], r["seed"]))
    if not runs:
        p.exit(2, f"study_report: error: no study run (<model>-<act>-s<seed>) under {a.runs}\n")
    text = table(rows(runs))
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "table.md").write_text(text + "\n")
        plot_val(runs, a.out / "val.png")
        for model in dict.fromkeys(r["model"] for r in runs):
            plot_dead(runs, model, a.out / f"dead_{model}.png")
        print(f"written: {a.out}/table.md, val.png, dead_<model>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
