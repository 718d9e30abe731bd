"""Speed on the device: activations vs a copy of the same bytes, training steps vs PyTorch.

Timing follows ``benchmarks/_harness.py``: candidates in turn, medians, compile time apart.
On an accelerator one call is ``inner`` consecutive steps (launch overhead amortised as in a
training loop) and the time per step is the call's time divided by ``inner``.
"""

from __future__ import annotations

import pathlib
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness as h
from benchmarks.accel.common import (
    Budget,
    app_step,
    error_record,
    guarded,
    load_cifar2,
    peak_mib,
    platform,
)

# ---------------------------------------------------------------- activations


def activation_speed(
    budget: Budget, *, quick: bool, names: list[str] | None = None
) -> dict[str, Any]:
    """Forward+backward of every activation vs ``jax.nn`` vs a device-to-device copy.

    fwd+bwd reads x and the cotangent and writes y and dx: 4 arrays of n elements. The copy
    moves the same bytes (2 arrays of n elements read, 2 written: ``jnp.copy`` of each, one
    jitted call). ``pct_of_copy`` = copy time / relujax time (goal: >= 80).
    """
    import relujax

    accel = platform() != "cpu"
    n = 2**14 if quick else (2**26 if accel else 2**22)
    # On an accelerator one timed call is `inner` calls dispatched back to back, so the
    # host's dispatch overlaps the device's work (a 2**26 fwd+bwd moves 1 GiB: ~0.2 ms).
    inner = 20 if accel and not quick else 1
    repeats = 3 if quick else 15
    x = 3 * jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    g = jax.random.normal(jax.random.key(1), (n,), jnp.float32)
    copy = jax.jit(lambda x, g: (jnp.copy(x), jnp.copy(g)))

    def _repeat(fn, k):
        def call():
            out = None
            for _ in range(k):
                out = fn(x, g)
            return out

        return call

    def fb(fn):
        def f(x, g):
            y, vjp = jax.vjp(fn, x)
            return y, vjp(g)[0]

        return _repeat(jax.jit(f), inner)

    if names is None:
        names = ["relu", "gelu"] if quick else list(relujax.ACTIVATIONS)
    rows: list[dict[str, Any]] = []
    for name in names:
        label = {"function": name}
        if not budget.ok():
            rows.append({**label, "skipped": "budget"})
            continue

        def one(name=name, label=label):
            spec = relujax.ACTIVATIONS[name]
            kw = dict(spec.default_kwargs)
            fns = {"relujax": fb(lambda v, f=spec.fn: f(v, **kw))}
            if spec.jax_nn is not None:
                fns["jax.nn"] = fb(lambda v, f=spec.jax_nn: f(v, **kw))
            fns["copy"] = _repeat(copy, inner)
            t = h.time_alternating(fns, repeats=repeats, warmup=2)
            ms = {k: 1e3 * v["median"] / inner for k, v in t.items()}
            row = {**label, "n": n, **{f"fb_ms_{k}": v for k, v in ms.items()}}
            row["fb_GBps_relujax"] = 4 * n * 4 / (ms["relujax"] / 1e3) / 1e9
            row["fb_GBps_copy"] = 4 * n * 4 / (ms["copy"] / 1e3) / 1e9
            row["pct_of_copy"] = 100 * ms["copy"] / ms["relujax"]
            row["speedup_vs_jax.nn"] = ms["jax.nn"] / ms["relujax"] if "jax.nn" in ms else None
            row["goal_80pct"] = row["pct_of_copy"] >= 80
            rows.append(row)
            print(
                f"  {name:10s} fwd+bwd {ms['relujax']:.3f} ms, {row['pct_of_copy']:.0f}% of copy",
                flush=True,
            )

        guarded(rows, label, one)
    return {"rows": rows, "dtype": "float32", "n": n, "inner_calls": inner}


# ---------------------------------------------------------------- training steps

# name -> (relujax model, kwargs, tests/torch_models constructor, kwargs, num_classes)
STEP_MODELS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any], int]] = {
    "netdepth": ("netdepth", {}, "NetDepth", {}, 2),
    "netres": ("netres", {}, "NetRes", {}, 2),
    "netresdeep_shared": (
        "netresdeep",
        {"n_blocks": 100, "shared_blocks": True},
        "NetResDeep",
        {"n_blocks": 100, "shared_blocks": True},
        2,
    ),
    "netresdeep": ("netresdeep", {"n_blocks": 100}, "NetResDeep", {"n_blocks": 100}, 2),
    "resnet20": ("resnet20", {}, "resnet20", {}, 10),
    "resnet56": ("resnet56", {}, "resnet56", {}, 10),
    # --quick stand-ins
    "netresdeep2": ("netresdeep", {"n_blocks": 2}, "NetResDeep", {"n_blocks": 2}, 2),
}
STEP_FULL = ["netdepth", "netres", "netresdeep_shared", "netresdeep", "resnet20", "resnet56"]
STEP_QUICK = ["netresdeep2"]
COMPILE_ORDER = ["netdepth", "netres", "resnet20", "resnet56", "netresdeep_shared", "netresdeep"]


def _torch_runner(ctor, tkw, batch, num_classes, *, compile_: bool, bf16: bool, inner: int):
    from benchmarks._steps import torch_ctor_step

    dtype = "bfloat16" if bf16 else "float32"
    step = torch_ctor_step(ctor, tkw, batch, num_classes, dtype=dtype, compile_=compile_)
    run, compile_s, peak = step.run, step.compile_s, step.peak_bytes

    def many():
        out = None
        for _ in range(inner):
            out = run()
        return out

    return many, compile_s, peak


def train_steps(budget: Budget, *, quick: bool, use_torch: bool) -> dict[str, Any]:
    """The app's step (relujax) vs PyTorch eager and ``torch.compile``, f32 then bf16.

    Three passes, cheapest first, so a tight budget still fills the most useful cells: every
    model with relujax and PyTorch eager in float32, then in bfloat16 (JAX ``dtype`` bf16 with
    float32 parameters, PyTorch autocast), then ``torch.compile`` (minutes of inductor time)
    for as many as the budget leaves. Peak memory: XLA's memory analysis; PyTorch's CUDA
    allocator peak (on CPU the bytes saved for backward).
    """
    batch = 8 if quick else 128
    inner = 1 if quick or platform() == "cpu" else 10
    repeats = 3 if quick else 7
    names = STEP_QUICK if quick else STEP_FULL
    dtypes = ["float32"] if quick else ["float32", "bfloat16"]
    rows: list[dict[str, Any]] = []
    have_torch = use_torch and h.torch_available()
    if have_torch:
        import torch

        torch.backends.cudnn.benchmark = True

    def bench(name, dtype, impls):
        model, kw, ctor, tkw, classes = STEP_MODELS[name]
        runners, info = {}, {}
        if "relujax" in impls:
            s = app_step(model, kw, batch=batch, num_classes=classes, dtype=dtype)
            runners["relujax"] = lambda s=s: s.run(inner)
            info["relujax"] = {"compile_s": s.compile_s, "peak_MiB": peak_mib(s.memory)}
        for impl in ("torch", "torch.compile"):
            if impl in impls:
                r, c, peak = _torch_runner(
                    ctor,
                    tkw,
                    batch,
                    classes,
                    compile_=impl == "torch.compile",
                    bf16=dtype == "bfloat16",
                    inner=inner,
                )
                runners[impl] = r
                info[impl] = {"compile_s": c, "peak_MiB": peak / 2**20}
        t = h.time_alternating(runners, repeats=repeats, warmup=1, settle=1)
        for impl, v in t.items():
            step_s = v["median"] / inner
            row = {"model": name, "batch": batch, "dtype": dtype, "impl": impl}
            row.update(step_ms=1e3 * step_s, images_per_s=batch / step_s, **info[impl])
            rows.append(row)
            print(
                f"  {name:18s} {dtype:8s} {impl:13s} {row['step_ms']:8.2f} ms "
                f"compile {row['compile_s'] or 0:.1f} s",
                flush=True,
            )

    eager = ["relujax", "torch"] if have_torch else ["relujax"]
    passes = [(d, eager) for d in dtypes]
    if have_torch and not quick:
        passes += [(d, ["torch.compile"]) for d in dtypes]
    for dtype, impls in passes:
        # torch.compile: the quick compiles first (inductor takes minutes on 100 blocks).
        order = COMPILE_ORDER if impls == ["torch.compile"] else names
        for name in [n for n in order if n in names]:
            label = {"model": name, "batch": batch, "dtype": dtype, "impl": "+".join(impls)}
            need = 45.0 if impls == ["torch.compile"] else 5.0
            if not budget.ok(need):
                rows.append({**label, "skipped": "budget"})
                continue
            guarded(
                rows, label, lambda name=name, dtype=dtype, impls=impls: bench(name, dtype, impls)
            )
    _add_ratios(rows)
    return {"rows": rows, "batch": batch, "inner_steps": inner}


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_torch`` (torch eager time / this time) and ``vs_torch_compile`` on every row."""
    ref: dict[tuple[str, str, str], float] = {}
    for r in rows:
        if "step_ms" in r and r["impl"] in ("torch", "torch.compile"):
            ref[(r["model"], r["dtype"], r["impl"])] = r["step_ms"]
    for r in rows:
        if "step_ms" not in r:
            continue
        for impl, key in (("torch", "vs_torch"), ("torch.compile", "vs_torch_compile")):
            t = ref.get((r["model"], r["dtype"], impl))
            r[key] = None if t is None else t / r["step_ms"]


# ---------------------------------------------------------------- the improved run


def improved_run(
    budget: Budget, *, quick: bool, out: pathlib.Path, data_dir: str | None
) -> dict[str, Any]:
    """The ``improved-netresdeep`` preset on CIFAR-2 for as many epochs as the budget allows.

    The number of epochs (it sets the cosine schedule) comes from the time of a few steps of
    the same training step, measured first; SIGINT at the deadline stops the run cleanly after
    the current batch (the loop saves a checkpoint and its metrics) if the estimate was short.
    """
    from relujax._src.app.presets import resolve
    from relujax.training import Interrupted, TrainConfig, read_metrics, train

    preset = {k: v for k, v in resolve("improved-netresdeep").items() if k != "preset"}
    if quick:
        preset["model_kwargs"] = {"n_blocks": 2, "n_chans1": 8}
        preset["batch_size"] = 32
    synthetic = {"n_train": 128, "n_test": 64} if quick else {"n_train": 10000, "n_test": 2000}
    ds, source = load_cifar2(data_dir, synthetic_kw=synthetic, real=not quick)
    row: dict[str, Any] = {"run": "improved-netresdeep", "data": source, **preset}
    bs = preset["batch_size"]
    try:
        probe = app_step(
            "netresdeep", preset["model_kwargs"], batch=bs, num_classes=2, augment=True
        )
        h.block(probe.run(2))
        t = h.time_alternating({"step": lambda: probe.run(5)}, repeats=3, warmup=0)
        step_s = t["step"]["median"] / 5
    except Exception as e:  # noqa: BLE001 - recorded
        return {"rows": [{**row, "ok": False, **error_record(e)}]}
    steps = -(-ds.n_train // bs) + 0.35 * -(-ds.n_test // bs)  # eval steps: forward only
    epoch_s = 1.25 * steps * step_s + 1.0  # + the per-epoch probe, metrics and checkpoint
    left = budget.left() - 2.5 * probe.compile_s - 5.0
    epochs = max(1, min(200, int(left // epoch_s)))
    if quick:
        epochs = min(epochs, 2)
    warmup = min(float(preset.get("warmup_epochs", 0.0)), 0.1 * epochs)
    row.update(estimated_epoch_s=epoch_s, step_ms_probe=1e3 * step_s, epochs=epochs)
    config = TrainConfig(
        **{**preset, "dataset": "cifar2" if source != "synthetic" else "synthetic"},
    ).replace(
        epochs=epochs,
        warmup_epochs=warmup,
        workdir=str(out / "improved_run"),
        log_every=0,
        progress=False,
        keep_checkpoints=1,
        checkpoint_every=max(epochs, 1),
    )
    timer = threading.Timer(max(budget.left(), 1.0), lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        summary = train(config, dataset=ds, log=lambda line: print("  " + line, flush=True))
        row["compile_s"] = summary.get("compile_seconds")
        row["stopped_early"] = False
    except (Interrupted, KeyboardInterrupt):  # the latter: the deadline came before the loop
        row["stopped_early"] = True
    except Exception as e:  # noqa: BLE001 - recorded
        row.update(ok=False, **error_record(e))
    finally:
        timer.cancel()
    history = read_metrics(out / "improved_run") if (out / "improved_run").exists() else []
    row.update(
        epochs_done=len(history),
        epoch_s=[r["seconds"] for r in history],
        train_loss=[r["train_loss"] for r in history],
        val_acc=[r["val_acc"] for r in history],
        best_val_acc=max((r["val_acc"] or 0.0 for r in history), default=None),
    )
    row.setdefault("ok", len(history) > 0 and bool(np.isfinite(row["train_loss"][-1])))
    return {"rows": [row]}
