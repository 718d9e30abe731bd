"""Markdown tables and PNG plots from the benchmarks' JSON results (what RESULTS.md is made of).

One section per JSON file: the machine it ran on (CPU, instruction set, cores, load, allocator,
versions, date), the command that wrote it, and its table. Results are named after the machine
kind they came from (``train_step_zen5.json``); the plots are drawn next to RESULTS.md with the
same stem: ``activations_<machine>.png`` (GB/s per activation) and ``train_step_<machine>.png``
(each model's step speed relative to PyTorch eager).

    python -m benchmarks.report                          # benchmarks/results/*.json
    python -m benchmarks.report --results DIR --plots DIR
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Callable
from typing import Any

from benchmarks import _harness as h
from benchmarks.activations import table_columns

HERE = pathlib.Path(__file__).resolve().parent
STEP_COLUMNS = ["model", "batch", "impl", "step_ms", "images_per_s", "vs_torch", "vs_torch_best"]
STEP_COLUMNS += ["compile_s", "peak_MiB", "peak_vs_torch"]


def isa(machine: dict[str, Any]) -> str:
    """The widest x86 vector extension in the machine's flags (what the kernels are built for)."""
    flags = machine.get("cpu_flags") or []
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def machine_line(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    load = ", ".join(f"{v:.1f}" for v in (m.get("load_average") or []))
    return (
        f"_{m['date_utc']}, {m['cpu']} ({isa(m)}, {m['cpu_count']} cores), backend "
        f"{m['backend']}, allocator {m.get('allocator', 'system (not recorded)')}, jax {m['jax']}, "
        f"flax {m['flax']}, torch {m['torch']} ({m['torch_threads']} threads), load average "
        f"{load}_"
    )


def command(doc: dict[str, Any]) -> str:
    module = "train_step" if doc["benchmark"].startswith("train_step") else doc["benchmark"]
    argv = doc.get("argv")
    if argv is None:
        return f"`python -m benchmarks.{module}` (arguments not recorded)"
    return "`" + " ".join(["python", "-m", f"benchmarks.{module}", *argv]) + "`"


def with_best_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds ``vs_torch_best``: the ratio of the fastest samples (least disturbed by the load)."""
    key = ("model", "batch", "dtype")
    best = {tuple(r.get(k) for k in key): min(r["samples"]) for r in rows if r["impl"] == "torch"}
    out = []
    for r in rows:
        ref = best.get(tuple(r.get(k) for k in key))
        out.append({**r, "vs_torch_best": None if ref is None else ref / min(r["samples"])})
    return out


def activations_table(doc: dict[str, Any]) -> str:
    cols, fwd = table_columns("fb"), table_columns("fwd")
    return "\n\n".join(
        [
            f"forward+backward, {doc['n_elements']:,} float32 elements, median ms:",
            h.format_table(doc["rows"], cols),
            "forward only:",
            h.format_table(doc["rows"], fwd),
            "residual bytes per element kept for backward:",
            h.format_table(
                doc["rows"], ["function", "residual_B_per_elt", "residual_B_per_elt_jax.nn"]
            ),
        ]
    )


def conv_pieces_table(doc: dict[str, Any]) -> str:
    return h.format_table(doc["rows"], ["case", "ms", "GFLOP_per_s"])


def input_pipeline_table(doc: dict[str, Any]) -> str:
    rows = [
        {"candidate": k, "median_s": t["median"], "compile_s": doc["compile_s"].get(k)}
        for k, t in doc["times"].items()
    ]
    return h.format_table(rows, ["candidate", "median_s", "compile_s"])


def allocator_table(doc: dict[str, Any]) -> str:
    cols = ["candidate", "allocator"] + [k for k in doc["rows"][0] if k.endswith("GB/s")]
    return h.format_table(doc["rows"], cols + ["step ms", "step speed-up"])


def train_step_table(doc: dict[str, Any]) -> str:
    if doc["benchmark"].startswith("train_step_depths"):
        return h.format_table(
            doc["rows"], ["depth", "batch", "impl", "compile_s", "step_ms", "peak_MiB"]
        )
    if doc["benchmark"].startswith("train_step_profile"):
        cols = ["model", "batch", "impl", "op", "ms_per_step", "count_per_step", "share_of_step"]
        return h.format_table([r for r in doc["rows"] if r["share_of_step"] >= 0.01], cols)
    rss = ["rss_MiB", "rss_step_MiB", "rss_vs_torch"] if "rss_MiB" in doc["rows"][0] else []
    return h.format_table(with_best_ratio(doc["rows"]), STEP_COLUMNS + rss)


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "activations": activations_table,
    "conv_pieces": conv_pieces_table,
    "input_pipeline": input_pipeline_table,
    "allocator": allocator_table,
    "train_step": train_step_table,
}


def section(path: pathlib.Path, doc: dict[str, Any]) -> str | None:
    kind = doc["benchmark"].split("_bfloat16")[0]
    table = TABLES.get(kind) or (train_step_table if kind.startswith("train_step") else None)
    if table is None:
        return None
    lines = [f"### {path.stem}", machine_line(doc), command(doc)]
    if "policy" in doc:  # what the speed policy chose for the JAX steps
        pol = doc["policy"]
        convs = "relujax's native kernels" if pol.get("native") else "XLA's"
        lines.append(f"Convolutions: {convs}; compile options: {pol.get('compiler_options')}.")
    return "\n\n".join([*lines, table(doc)])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_activations(doc: dict[str, Any], path: pathlib.Path) -> None:
    import numpy as np

    plt = _pyplot()
    rows = doc["rows"]
    names = [r["function"] for r in rows]
    impls = [i for i in ("relujax", "jax.nn", "torch", "limit") if f"fb_GBps_{i}" in rows[0]]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=90)
    width = 0.8 / len(impls)
    xs = np.arange(len(names))
    for k, impl in enumerate(impls):
        ax.bar(xs + k * width, [r.get(f"fb_GBps_{impl}") or 0.0 for r in rows], width, label=impl)
    ax.set_xticks(xs + 0.4 - width / 2, names, rotation=30)
    ax.set_ylabel("effective GB/s (fwd+bwd)")
    m = doc["machine"]
    ax.set_title(f"activations, {doc['n_elements']:,} float32 elements ({m['cpu']}, {isa(m)})")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_train_step(doc: dict[str, Any], path: pathlib.Path) -> None:
    """Each model's step speed relative to PyTorch eager (1.0 = as fast), one bar per step."""
    import numpy as np

    plt = _pyplot()
    rows = [r for r in doc["rows"] if r.get("vs_torch") is not None and r["impl"] != "torch"]
    groups = list(dict.fromkeys(f"{r['model']}\nb{r['batch']}" for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) + 2), 3.6), dpi=90)
    width = 0.8 / max(len(impls), 1)
    xs = np.arange(len(groups))
    for k, impl in enumerate(impls):
        got = {f"{r['model']}\nb{r['batch']}": r["vs_torch"] for r in rows if r["impl"] == impl}
        ax.bar(xs + k * width, [got.get(g, 0.0) for g in groups], width, label=impl)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="PyTorch eager")
    ax.set_xticks(xs + 0.4 - width / 2, groups, fontsize=8)
    ax.set_ylabel("step speed vs PyTorch eager")
    m = doc["machine"]
    ax.set_title(
        f"training step, {doc.get('dtype', 'float32')}: {m['cpu']} ({isa(m)}, "
        f"{m['cpu_count']} cores), allocator {m.get('allocator', '?')}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=pathlib.Path, default=HERE / "results")
    p.add_argument("--plots", type=pathlib.Path, default=HERE, help="folder for the PNGs")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    sections = []
    for path in sorted(args.results.glob("*.json")):
        doc = json.loads(path.read_text())
        text = section(path, doc)
        if text is None:
            continue
        sections.append(text)
        print(text + "\n")
        if args.no_plots:
            continue
        if doc["benchmark"] == "activations":
            plot_activations(doc, args.plots / f"{path.stem}.png")
        elif doc.get("mode") in ("side_by_side", "isolated"):
            plot_train_step(doc, args.plots / f"{path.stem}.png")
    return sections


if __name__ == "__main__":
    main()
