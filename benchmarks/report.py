"""Tables and plots from the latest JSON results (what ``benchmarks/RESULTS.md`` is made of).

Reads ``benchmarks/results/*.json`` (written by the three benchmarks), prints the markdown tables
that RESULTS.md quotes, and draws the PNG plots next to it:

    python -m benchmarks.report            # tables to stdout, plots to benchmarks/*.png
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from benchmarks import _harness as h
from benchmarks.activations import table_columns

HERE = pathlib.Path(__file__).resolve().parent


def _load(name: str) -> dict[str, Any] | None:
    path = h.RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine_line(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    load = ", ".join(f"{v:.1f}" for v in (m.get("load_average") or []))
    return (
        f"_{m['date_utc']}, {m['cpu']} ({m['cpu_count']} cores), backend {m['backend']}, "
        f"jax {m['jax']}, flax {m['flax']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"load average {load}_"
    )


def activations_section(doc: dict[str, Any]) -> str:
    rows = doc["rows"]
    out = [
        f"### forward+backward, {doc['n_elements']:,} float32 elements, median ms\n",
        _machine_line(doc) + "\n",
        h.format_table(rows, table_columns("fb")),
        "\n### forward only\n",
        h.format_table(rows, table_columns("fwd")),
        "\n### residual bytes per element, and the conv -> BN -> act -> add block's kernels\n",
        h.format_table(rows, ["function", "residual_B_per_elt", "residual_B_per_elt_jax.nn"]),
        "",
        h.format_table(
            doc["hlo"],
            ["function", "fusions_relujax", "fusions_jax.nn", "kernels_relujax", "kernels_jax.nn"],
        ),
    ]
    return "\n".join(out)


def _with_best_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds ``vs_torch_best``: the ratio of the fastest samples (least disturbed by the load)."""
    best = {(r["model"], r["batch"]): min(r["samples"]) for r in rows if r["impl"] == "torch"}
    out = []
    for r in rows:
        ref = best.get((r["model"], r["batch"]))
        out.append({**r, "vs_torch_best": None if ref is None else ref / min(r["samples"])})
    return out


def train_step_section(doc: dict[str, Any]) -> str:
    cols = ["model", "batch", "impl", "step_ms", "images_per_s", "vs_torch", "vs_torch_best"]
    table = h.format_table(_with_best_ratio(doc["rows"]), cols + ["compile_s", "peak_MiB"])
    return "\n".join([_machine_line(doc) + "\n", table])


def residual_section(doc: dict[str, Any]) -> str:
    cols = ["model", "batch", "impl", "activation", "residual_B_per_elt", "step_ms"]
    cols += ["speed_vs_relujax.relu", "temp_MiB"]
    return "\n".join([_machine_line(doc) + "\n", h.format_table(doc["rows"], cols)])


def compile_section(doc: dict[str, Any]) -> str:
    cols = ["depth", "variant", "compile_s", "step_ms", "temp_MiB"]
    return "\n".join([_machine_line(doc) + "\n", h.format_table(doc["rows"], cols)])


def plot_activations(doc: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = doc["rows"]
    names = [r["function"] for r in rows]
    impls = [i for i in ("relujax", "jax.nn", "torch", "limit") if f"fb_GBps_{i}" in rows[0]]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=90)
    width = 0.8 / len(impls)
    xs = np.arange(len(names))
    for k, impl in enumerate(impls):
        vals = [r.get(f"fb_GBps_{impl}") or 0.0 for r in rows]
        ax.bar(xs + k * width, vals, width, label=impl)
    ax.set_xticks(xs + 0.4 - width / 2, names, rotation=30)
    ax.set_ylabel("effective GB/s (fwd+bwd)")
    ax.set_title(f"activations, {doc['n_elements']:,} float32 elements ({doc['machine']['cpu']})")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_compile(doc: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
    variants = sorted({r["variant"] for r in doc["rows"]})
    for v in variants:
        rs = sorted((r for r in doc["rows"] if r["variant"] == v), key=lambda r: r["depth"])
        d = [r["depth"] for r in rs]
        a1.plot(d, [r["compile_s"] for r in rs], "o-", label=v)
        a2.plot(d, [r["step_ms"] / 1e3 for r in rs], "o-", label=v)
    a1.set_xlabel("ResBlocks")
    a1.set_ylabel("compile s")
    a2.set_xlabel("ResBlocks")
    a2.set_ylabel(f"train step s (batch {doc['batch']})")
    a2.set_yscale("log")
    a1.legend(fontsize=8)
    fig.suptitle(f"NetResDeep compile and step time vs depth ({doc['machine']['backend']})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    act = _load("activations")
    if act:
        print("## activations\n\n" + activations_section(act) + "\n")
        plot_activations(act, HERE / "activations.png")
    for name, title in (
        ("train_step_netresdeep_b64", "train_step, NetResDeep b64 (float32)"),
        ("train_step", "train_step (float32)"),
        ("train_step_bf16", "bf16"),
    ):
        doc = _load(name)
        if doc:
            print(f"## {title}\n\n" + train_step_section(doc) + "\n")
    res = _load("train_step_residual")
    if res:
        print("## residual modes\n\n" + residual_section(res) + "\n")
    ct = _load("compile_time")
    if ct:
        print("## compile_time\n\n" + compile_section(ct) + "\n")
        plot_compile(ct, HERE / "compile_time.png")


if __name__ == "__main__":
    main()
