"""Training-step speed of what users run: relujax's steps beside the PyTorch originals.

A full SGD step (forward, cross-entropy, backward, update; BatchNorm in training mode) on
CIFAR-shaped data for each model and batch size. The steps (``benchmarks._steps``):

* ``app``: the step ``python -m train`` runs, built by the application's own builders
  (``relujax.training.make_steps`` and the run setup), whatever the speed policy decides;
* ``app[ACTIVATION]``: the same with another activation (a ``create_model`` name, or
  ``jax.nn.relu`` / ``relu(residual='bits')`` to compare what the backward pass keeps);
* ``app-direct``: the same with relujax's native convolutions computed directly, not as
  Winograd (``RELUJAX_NATIVE_WINOGRAD=0`` while it compiles): what the Winograd paths gain;
* ``plain``: a user's own step, ``nnx.jit`` over ``nnx.value_and_grad`` and ``nnx.Optimizer``,
  on ``relujax.models.create_model(name)`` with default arguments; ``plain[cached]`` the same
  through ``nnx.cached_partial`` (Flax's remedy for ``nnx.jit``'s per-call graph walk);
  ``plain[jax.jit]`` ``jax.jit`` over the ``nnx.split`` state;
* ``torch``: the PyTorch original (``tests/torch_models.py``), eager; ``torch.compile`` (where
  it works: a failure is printed and the row left out).

By default the steps run side by side in one process, called in turn (each turn runs its step
once untimed, then once timed, as consecutive steps of a training loop; medians over the
rounds), so a slow spell of a shared machine hits every candidate alike; both frameworks run
under the same allocator (``relujax._src.allocator``, named in the JSON's machine info).
``vs_torch`` is PyTorch eager's median step time over the row's; ``peak_vs_torch`` the row's
peak memory over PyTorch's. Peak memory: for JAX, XLA's compiled memory analysis of the whole
step (arguments + outputs + temporaries: parameters, batch and optimizer state included); for
PyTorch on CUDA the allocator's peak, and on CPU, where PyTorch reports none, the bytes autograd
saves for the backward pass (``saved_tensors_hooks``), a lower bound of its peak. On CPU the
ratio is therefore one-sided: at or below 1 it shows the JAX step's whole peak at or below
PyTorch's; above 1 it shows nothing. Compile time is measured apart (trace + lower + compile).

Variants, as flags:

* ``--isolated``: every sample is a fresh process running one step alone (no other library's
  threads or buffers around), rounds alternating between the steps;
* ``--profile``: where the JAX steps' time goes, per kind of executed op (``jax.profiler``);
* ``--depths 10,50,100,200``: compile time and step time of NetResDeep against depth, the app
  step with unrolled and with scanned blocks, and the plain step;
* ``--dtype bfloat16``: bfloat16 compute (JAX ``dtype=bfloat16`` with float32 parameters,
  PyTorch autocast);
* ``--xla-convs``: XLA's convolutions instead of relujax's native kernels
  (``RELUJAX_NATIVE=0``, for a fresh process).

    python -m benchmarks.train_step                  # six models, batch 64
    python -m benchmarks.train_step --quick          # two small models, batch 8
    python -m benchmarks.train_step --models netresdeep --batch-sizes 64 --repeats 7
    python -m benchmarks.train_step --models netresdeep --isolated
    python -m benchmarks.train_step --models netresdeep --profile
    python -m benchmarks.train_step --depths 10,50,100,200
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import _harness as h
from benchmarks import _step_modes as modes
from benchmarks import _steps as S
from relujax._src import allocator

FULL = ["netdepth", "netres", "netresdeep_shared", "netresdeep", "resnet20", "resnet56"]
QUICK = ["netdepth", "netresdeep2"]
DEFAULT_IMPLS = "app,plain,torch"
COLUMNS = ["model", "batch", "impl", "step_ms", "images_per_s", "vs_torch", "compile_s"]
COLUMNS += ["peak_MiB", "peak_vs_torch"]


def make_row(
    name: str, batch: int, dtype: str, impl: str, samples: Sequence[float], step: S.Step
) -> dict[str, Any]:
    """One table row from a step's timed samples (seconds)."""
    med = statistics.median(samples)
    return {
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "impl": impl,
        "step_ms": 1e3 * med,
        "images_per_s": batch / med,
        "compile_s": step.compile_s,
        "peak_MiB": None if step.peak_bytes is None else step.peak_bytes / 2**20,
        "xla_memory": step.memory,
        "samples": [round(v, 6) for v in samples],
    }


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sets ``vs_torch`` and ``peak_vs_torch`` against the ``torch`` row of the same group."""
    ref = {(r["model"], r["batch"], r["dtype"]): r for r in rows if r["impl"] == "torch"}
    for r in rows:
        t = ref.get((r["model"], r["batch"], r["dtype"]))
        r["vs_torch"] = None if t is None else t["step_ms"] / r["step_ms"]
        ok = t is not None and t["peak_MiB"] and r["peak_MiB"] is not None
        r["peak_vs_torch"] = r["peak_MiB"] / t["peak_MiB"] if ok else None
    return rows


def _print_row(r: dict[str, Any]) -> None:
    nan = float("nan")
    print(
        f"  {r['model']:18s} b{r['batch']:<4d} {r['impl']:14s} {r['step_ms']:9.1f} ms "
        f"{r['images_per_s']:8.0f} img/s  compile {r['compile_s'] or nan:.1f} s",
        flush=True,
    )


def _build_all(impls: list[str], name: str, batch: int, dtype: str) -> dict[str, S.Step]:
    steps = {}
    for impl in impls:
        try:
            steps[impl] = S.build(impl, name, batch, dtype=dtype)
        except Exception as e:
            if impl != "torch.compile":
                raise
            print(f"  torch.compile failed for {name}: {type(e).__name__}: {e}"[:300])
    return steps


def side_by_side(models, batches, impls, args) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        for batch in batches:
            steps = _build_all(impls, name, batch, args.dtype)
            runners = {impl: s.run for impl, s in steps.items()}
            times = h.time_alternating(runners, repeats=args.repeats, settle=args.settle)
            for impl, t in times.items():
                rows.append(make_row(name, batch, args.dtype, impl, t["samples"], steps[impl]))
                _print_row(rows[-1])
    return add_ratios(rows)


def _proc_status(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (None where /proc is missing)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Restarts the kernel's resident-memory high-water mark (``VmHWM``) at the current RSS."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(args) -> None:
    """Runs in a fresh process: builds one step, times ``--steps`` consecutive steps.

    Also the process's resident memory (Linux): before the step is built (the libraries
    imported) and its peak over the timed steps (the high-water mark restarted after the
    warm-up, so compilation's own peak is not counted, though memory the allocator kept from it
    is): what a training process of this step holds, framework and allocator included.
    """
    base = _proc_status("VmRSS")
    step = S.build(args.child, args.models[0], args.batch_sizes[0], dtype=args.dtype)
    for _ in range(3):
        h.block(step.run())
    peak_ok = _reset_peak_rss()
    samples = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        h.block(step.run())
        samples.append(time.perf_counter() - t0)
    out = {"samples": samples, "compile_s": step.compile_s, "peak_bytes": step.peak_bytes}
    rss = {"rss_base_bytes": base, "rss_peak_bytes": _proc_status("VmHWM") if peak_ok else None}
    print(json.dumps(out | rss | {"memory": step.memory}))


def _spawn(impl: str, name: str, batch: int, args) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--child", impl, "--models", name]
    cmd += ["--batch-sizes", str(batch), "--steps", str(args.steps), "--dtype", args.dtype]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{impl} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def isolated(models, batches, impls, args) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        for batch in batches:
            got: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
            for _ in range(args.rounds):
                for impl in impls:
                    got[impl].append(_spawn(impl, name, batch, args))
            for impl, outs in got.items():
                samples = [v for o in outs for v in o["samples"]]
                compiles = [o["compile_s"] for o in outs if o["compile_s"] is not None]
                step = S.Step(
                    None,
                    statistics.median(compiles) if compiles else None,
                    outs[0]["peak_bytes"],
                    outs[0]["memory"],
                )
                rows.append(make_row(name, batch, args.dtype, impl, samples, step))
                rows[-1].update(_rss_columns(outs))
                _print_row(rows[-1])
    rows = add_ratios(rows)
    ref = {(r["model"], r["batch"], r["dtype"]): r for r in rows if r["impl"] == "torch"}
    for r in rows:
        t = ref.get((r["model"], r["batch"], r["dtype"]))
        ok = t is not None and t.get("rss_MiB") and r.get("rss_MiB") is not None
        r["rss_vs_torch"] = r["rss_MiB"] / t["rss_MiB"] if ok else None
    return rows


def _rss_columns(outs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median resident memory over the processes: peak during the steps, and that peak less the
    process's memory before the step was built (libraries imported), in MiB."""
    peaks = [o["rss_peak_bytes"] for o in outs if o.get("rss_peak_bytes")]
    grown = [o["rss_peak_bytes"] - o["rss_base_bytes"] for o in outs
             if o.get("rss_peak_bytes") and o.get("rss_base_bytes")]  # fmt: skip
    mib = lambda v: statistics.median(v) / 2**20 if v else None  # noqa: E731
    return {"rss_MiB": mib(peaks), "rss_step_MiB": mib(grown)}


def _policy() -> dict[str, Any]:
    """What the speed policy chose in this process (convolutions, compile options, allocator)."""
    from relujax import policy

    return policy.describe()


def _comma(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--models", type=_comma(str), default=None, help=f"some of {list(S.MODELS)}")
    p.add_argument("--batch-sizes", type=_comma(int), default=None, help="default 64 (quick: 8)")
    p.add_argument(
        "--impls",
        type=_comma(str),
        default=None,
        help=f"comma list of steps (default {DEFAULT_IMPLS}; also torch.compile, app[ACTIVATION])",
    )
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--xla-convs", action="store_true", help="XLA's convolutions, not native ones")
    p.add_argument("--settle", type=int, default=1, help="untimed calls before each timed one")
    p.add_argument("--isolated", action="store_true", help="each sample in a fresh process")
    p.add_argument("--rounds", type=int, default=3, help="--isolated: processes per step")
    p.add_argument("--steps", type=int, default=None, help="--isolated/--profile: steps per run")
    p.add_argument("--profile", action="store_true", help="op-kind profile of the JAX steps")
    p.add_argument("--top", type=int, default=15, help="--profile: op kinds printed per step")
    p.add_argument("--depths", type=_comma(int), default=None, help="compile/step vs depth")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = args.models or (QUICK if args.quick else FULL)
    args.impls = args.impls or DEFAULT_IMPLS.split(",")
    try:
        for name in args.models:
            S.spec(name)
        for impl in args.impls:
            S.check_impl(impl)
    except ValueError as e:
        p.error(str(e))
    args.batch_sizes = args.batch_sizes or ([8] if args.quick else [64])
    if any(b < 1 for b in args.batch_sizes):
        p.error(f"--batch-sizes: expected positive integers, got {args.batch_sizes}")
    if args.no_torch or not h.torch_available():
        args.impls = [i for i in args.impls if not i.startswith("torch")]
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.steps = args.steps or (3 if args.quick else 10)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.xla_convs:
        os.environ["RELUJAX_NATIVE"] = "0"  # read when the native library is first loaded
        if _policy().get("native"):
            raise SystemExit(
                "--xla-convs: relujax's native kernels are already loaded in this process; run "
                "the benchmark in a fresh process (or set RELUJAX_NATIVE=0 before starting it)"
            )
    if args.child:
        _child(args)
        return {}
    argv = sys.argv[1:] if argv is None else list(argv)
    doc: dict[str, Any] = {"dtype": args.dtype, "impls": args.impls, "argv": argv}
    doc["policy"] = _policy()
    if args.depths:
        h.header(f"train_step vs depth ({args.dtype}, batch {args.batch_sizes[0]})")
        doc["rows"] = modes.depths(args.depths, args.batch_sizes[0], args)
        print("\n" + h.format_table(doc["rows"], modes.DEPTH_COLUMNS))
        name = "train_step_depths"
    elif args.profile:
        h.header(f"train_step profile ({args.dtype})")
        doc["rows"] = modes.profile(args.models, args.batch_sizes, args)
        name = "train_step_profile"
    else:
        how = "isolated processes" if args.isolated else "side by side"
        h.header(f"train_step ({args.dtype}, {how})")
        run = isolated if args.isolated else side_by_side
        doc["mode"] = "isolated" if args.isolated else "side_by_side"
        doc["rows"] = run(args.models, args.batch_sizes, args.impls, args)
        extra = ["rss_MiB", "rss_step_MiB", "rss_vs_torch"] if args.isolated else []
        print("\n" + h.format_table(doc["rows"], COLUMNS + extra))
        name = "train_step" + ("_isolated" if args.isolated else "")
    name += "" if args.dtype == "float32" else f"_{args.dtype}"
    h.write_json(name, doc, quick=args.quick, out=args.out)
    return doc


if __name__ == "__main__":
    allocator.relaunch()
    main()
