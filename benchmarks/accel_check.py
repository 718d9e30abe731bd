"""One prepared check of relujax on an accelerator (GPU/TPU), sized for a short loan.

Runs from a plain checkout on whatever backend JAX finds, with no installs (jax, flax, optax,
numpy; PyTorch for the parity and speed comparisons, matplotlib for PNGs, both optional), in
sections ordered by value, each with its own time budget:

1. ``env``: machine, devices, versions, the speed policy's choices;
2. ``activation_tests``: ``tests/test_activations_*.py`` run by pytest on this backend
   (values, derivatives, NaN-safety, dtype rules in bf16/f16/f32);
3. ``parity``: relujax vs the PyTorch originals (``tests/torch_models.py``) on the same device,
   logits and gradients;
4. ``scan``: scanned vs unrolled block stacks agree;
5. ``short_run``: 2 epochs of NetDepth on CIFAR-2 (``--data-dir`` or ``$RELUJAX_DATA``;
   synthetic when absent): the loss falls;
6. ``export``: only without a GPU: the app's steps, as built for ``gpu``, lower for CUDA;
7. ``activation_speed``: each activation's fwd+bwd vs ``jax.nn`` and vs a copy of the same bytes;
8. ``train_steps``: the app's training step of NetDepth, NetRes, NetResDeep(100, shared and
   independent), resnet20, resnet56 at batch 128 in f32 and bf16 vs PyTorch eager and
   ``torch.compile``, with compile time and peak memory;
9. ``improved_run``: ``improved-netresdeep`` on CIFAR-2 for the time left, with time per epoch.

A failing check is recorded (error and traceback in the JSON) and the next one runs. The JSON
(``accel_check.json``) is rewritten after every section, so a run cut short keeps what it did.

    PYTHONPATH=. python -m benchmarks.accel_check --out benchmarks/out/accel   # ~8 min on a GPU
    PYTHONPATH=. python -m benchmarks.accel_check --quick --out /tmp/accel      # CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import _harness as h
from benchmarks.accel import common, correctness, speed
from benchmarks.accel.common import Budget, error_record, platform

# Seconds per section in the full run (of --budget 480); the improved run gets what is left.
BUDGETS = {
    "env": 10,
    "activation_tests": 90,
    "parity": 40,
    "scan": 25,
    "short_run": 45,
    "export": 30,
    "activation_speed": 30,
    "train_steps": 160,
}
QUICK_BUDGETS = {k: 12.0 for k in BUDGETS}  # of --budget 120
SECTIONS = [*BUDGETS, "improved_run"]
RESERVE_S = 8.0  # kept back at the end for the table, the plots and the JSON


def env_section(budget: Budget, **_: Any) -> dict[str, Any]:
    """Machine and versions, and what the speed policy picks on this backend."""
    import jax

    info: dict[str, Any] = {"machine": h.machine_info(), "platform": platform()}
    info["devices_detail"] = [
        {"kind": d.device_kind, "platform": d.platform, "id": d.id} for d in jax.devices()
    ]
    from relujax import policy

    info["policy"] = policy.describe()
    precision = getattr(jax.config, "jax_default_matmul_precision", "unknown")
    info["jax_default_matmul_precision"] = str(precision)
    try:
        import torch

        info["torch_cuda_device"] = (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        )
        info["torch_allow_tf32"] = {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    except Exception as e:  # noqa: BLE001
        info["torch_cuda_device"] = f"unavailable: {type(e).__name__}"
    info["rows"] = [{"check": "env", "ok": True}]
    return info


def _sections(args: argparse.Namespace, out: pathlib.Path) -> dict[str, Callable[[Budget], Any]]:
    q, dd = args.quick, args.data_dir
    use_torch = not args.no_torch and h.torch_available()

    def need_torch(fn: Callable[[Budget], Any]) -> Callable[[Budget], Any]:
        if use_torch:
            return fn
        return lambda b: {"rows": [{"ok": None, "skipped": "PyTorch not available"}]}

    return {
        "env": lambda b: env_section(b),
        "activation_tests": lambda b: correctness.activation_tests(b, quick=q, out=out),
        "parity": need_torch(lambda b: correctness.torch_parity(b, quick=q)),
        "scan": lambda b: correctness.scan_vs_unrolled(b, quick=q),
        "short_run": lambda b: correctness.short_run(b, quick=q, out=out, data_dir=dd),
        "export": lambda b: correctness.export_gpu(b, quick=q),
        "activation_speed": lambda b: speed.activation_speed(b, quick=q),
        "train_steps": lambda b: speed.train_steps(b, quick=q, use_torch=use_torch),
        "improved_run": lambda b: speed.improved_run(b, quick=q, out=out, data_dir=dd),
    }


def _status(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR"
    rows = result.get("rows", [])
    if any(r.get("ok") is False or "error" in r for r in rows):
        return "FAIL"
    if rows and all(r.get("skipped") for r in rows):
        return "skipped"
    if any(r.get("incomplete") or r.get("skipped") for r in rows):
        return "partial"
    return "ok"


def _headline(name: str, result: dict[str, Any]) -> str:
    """One short figure per section for the closing table."""
    rows = [r for r in result.get("rows", []) if "error" not in r and not r.get("skipped")]
    if not rows:
        return ""
    if name == "activation_tests":
        r = rows[0]
        cut = f" of {r.get('collected', '?')} (budget ran out)" if r.get("incomplete") else ""
        return f"{r.get('passed', 0)} passed{cut}, {r.get('failed', 0)} failed"
    if name in ("parity", "scan"):
        return f"worst error {max(r.get('worst', 0.0) for r in rows):.1e} ({len(rows)} models)"
    if name == "short_run":
        r = rows[0]
        return f"train loss {' -> '.join(f'{v:.4f}' for v in r['train_loss'])} ({r['data']})"
    if name == "export":
        return f"{sum(bool(r['ok']) for r in rows)}/{len(rows)} steps lower for cuda"
    if name == "activation_speed":
        pct = [r["pct_of_copy"] for r in rows]
        return f"{min(pct):.0f}-{max(pct):.0f}% of copy bandwidth"
    if name == "train_steps":
        v = [r["vs_torch"] for r in rows if r["impl"] == "relujax" and r.get("vs_torch")]
        return f"relujax/torch eager speed {min(v):.2f}-{max(v):.2f}x" if v else ""
    if name == "improved_run":
        r = rows[0]
        if not r.get("epoch_s"):
            return ""
        return (
            f"{r['epochs_done']} epochs, {np_median(r['epoch_s']):.1f} s/epoch, "
            f"best val acc {r['best_val_acc']:.4f}"
        )
    return ""


def _safe_headline(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"][:80]
    try:
        return _headline(name, result)
    except Exception as e:  # noqa: BLE001 - the closing table must always print
        return f"(no headline: {type(e).__name__})"


def np_median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2]


def print_tables(doc: dict[str, Any]) -> None:
    res = doc["sections"]
    ts = res.get("train_steps", {}).get("rows", [])
    ts = [r for r in ts if "step_ms" in r]
    if ts:
        cols = ["model", "dtype", "impl", "step_ms", "images_per_s", "vs_torch"]
        print(f"\n## training steps (batch {res['train_steps'].get('batch')})\n")
        print(h.format_table(ts, cols + ["vs_torch_compile", "compile_s", "peak_MiB"]))
    act = [r for r in res.get("activation_speed", {}).get("rows", []) if "pct_of_copy" in r]
    if act:
        print("\n## activations, fwd+bwd float32\n")
        cols = ["function", "fb_ms_relujax", "fb_ms_jax.nn", "fb_ms_copy", "pct_of_copy"]
        print(h.format_table(act, cols + ["speedup_vs_jax.nn"]))
    rows = [
        {
            "section": name,
            "status": _status(r),
            "seconds": r.get("seconds"),
            "result": _safe_headline(name, r),
        }
        for name, r in res.items()
    ]
    m = doc["machine"]
    print(f"\n## accel_check summary: {m['devices'][0]} ({m['backend']}), jax {m['jax']}\n")
    print(h.format_table(rows, ["section", "status", "seconds", "result"]))


def write_plots(doc: dict[str, Any], out: pathlib.Path) -> list[str]:
    """PNGs of the speed tables and the improved run, when matplotlib imports."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001 - optional
        return []
    written = []
    res = doc["sections"]
    ts = [r for r in res.get("train_steps", {}).get("rows", []) if "images_per_s" in r]
    if ts:
        labels = sorted({(r["model"], r["dtype"]) for r in ts}, key=str)
        impls = sorted({r["impl"] for r in ts})
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            val = {(r["model"], r["dtype"]): r["images_per_s"] for r in ts if r["impl"] == impl}
            xs = [j + i * width for j in range(len(labels))]
            ax.bar(xs, [val.get(k, 0.0) for k in labels], width, label=impl)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels([f"{m}\n{d}" for m, d in labels], fontsize=7)
        ax.set_ylabel("images/s")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "train_steps.png", dpi=120)
        plt.close(fig)
        written.append("train_steps.png")
    runs = res.get("improved_run", {}).get("rows", [])
    if runs and runs[0].get("train_loss"):
        r = runs[0]
        fig, ax = plt.subplots(figsize=(6, 4))
        ep = list(range(1, len(r["train_loss"]) + 1))
        ax.plot(ep, r["train_loss"], label="train loss")
        ax.plot(ep, [v or 0.0 for v in r["val_acc"]], label="val acc")
        ax.set_xlabel("epoch")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "improved_run.png", dpi=120)
        plt.close(fig)
        written.append("improved_run.png")
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=pathlib.Path, required=True, help="folder for JSON/PNG/logs")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    p.add_argument("--budget", type=float, default=None, help="total seconds (default 480)")
    p.add_argument("--data-dir", default=None, help="folder holding cifar2.npz")
    p.add_argument("--sections", default=None, help=f"comma list from {SECTIONS}")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch (parity and speed)")
    args = p.parse_args(argv)
    total = args.budget or (120.0 if args.quick else 480.0)
    budgets = dict(QUICK_BUDGETS if args.quick else BUDGETS)
    scale = total / (120.0 if args.quick else 480.0)
    wanted = args.sections.split(",") if args.sections else list(SECTIONS)
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown {unknown}; expected names from {SECTIONS}")
    if platform() not in ("cpu",) and "export" in wanted and args.sections is None:
        wanted.remove("export")  # a real GPU/TPU compiles the steps itself
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    overall = Budget(total)
    doc: dict[str, Any] = {
        "benchmark": "accel_check",
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "budget_s": total,
        "machine": h.machine_info(),
        "sections": {},
    }
    runners = _sections(args, out)

    def save_partial(rows: list[dict[str, Any]]) -> None:
        doc["sections"][current[0]] = {"rows": rows, "partial": True}
        (out / "accel_check.json").write_text(json.dumps(doc, indent=1, default=h._jsonable))

    current = [""]
    common.on_progress = save_partial
    for name in wanted:
        current[0] = name
        own = budgets.get(name, 0.0) * scale
        if name == "improved_run":
            own = overall.left() - RESERVE_S
        own = min(own, overall.left() - RESERVE_S)
        print(f"\n# {name} (budget {own:.0f} s)", flush=True)
        t0 = time.perf_counter()
        if own <= 0:
            result: dict[str, Any] = {"rows": [{"ok": None, "skipped": "budget"}]}
        else:
            try:
                result = runners[name](Budget(own))
            except Exception as e:  # noqa: BLE001 - recorded, the next section runs
                result = error_record(e)
                print(f"  ERROR {result['error']}"[:400], flush=True)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        result["budget_s"] = round(own, 1)
        doc["sections"][name] = result
        (out / "accel_check.json").write_text(json.dumps(doc, indent=1, default=h._jsonable))
    common.on_progress = common._no_progress
    doc["plots"] = write_plots(doc, out)
    doc["total_s"] = round(overall.elapsed(), 2)
    (out / "accel_check.json").write_text(json.dumps(doc, indent=1, default=h._jsonable) + "\n")
    print_tables(doc)
    print(f"\nwrote {out / 'accel_check.json'} ({doc['total_s']:.0f} s)")
    return doc


if __name__ == "__main__":
    main()
