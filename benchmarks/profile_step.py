"""Where a training step's time goes: per-kind op times from a ``jax.profiler`` trace.

Compiles ``benchmarks.train_step``'s step for one model the way ``python -m train`` does (or
with XLA's convolutions only, ``--xla-convs``), traces ``--steps`` steps with the profiler
(Perfetto JSON, no TensorBoard needed), and sums the traced time of every executed op by kind
(the HLO name without its numeric suffix: ``ffi_call``, ``transpose_copy_fusion``,
``ynn_fusion``, ...), per step. On XLA:CPU a library convolution (Eigen) runs on the intra-op
pool and its trace event covers only the dispatch, so its time shows up as the gap between the
step time and the op total; a native kernel (``ffi_call``) is traced in full.

    python -m benchmarks.profile_step                       # NetResDeep, 100 blocks, batch 64
    python -m benchmarks.profile_step --xla-convs
    python -m benchmarks.profile_step --model netresdeep10 --batch-size 16 --quick
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re
import tempfile
import time
from typing import Any

import jax
import optax

from benchmarks import _harness as h
from benchmarks import train_step as ts
from relujax._src import allocator, perf

_HOST = ("$", "ThunkExecutor", "PjitFunction", "SlinkyThreadPool", "end: ")


def op_times(trace_dir: str, steps: int) -> tuple[dict[str, float], dict[str, int]]:
    """Milliseconds per step and count per step of each op kind in the trace under trace_dir."""
    (path,) = pathlib.Path(trace_dir).rglob("*.trace.json.gz")
    events = json.loads(gzip.open(path).read())["traceEvents"]
    ms: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(_HOST) or "Executable" in name:
            continue
        kind = re.sub(r"\.\d+$", "", name)
        ms[kind] += e["dur"] / 1e3 / steps
        count[kind] += 1
    return dict(ms), {k: v // steps for k, v in count.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help=f"one of {sorted(ts.MODELS)} (default netresdeep)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (quick: 8)")
    p.add_argument("--steps", type=int, default=3, help="traced steps (default 3)")
    p.add_argument("--top", type=int, default=15, help="op kinds to print (default 15)")
    p.add_argument("--xla-convs", action="store_true", help="XLA's convolutions (native=False)")
    args = p.parse_args(argv)
    model = args.model or ("netresdeep2" if args.quick else "netresdeep")
    batch = args.batch_size or (8 if args.quick else 64)
    spec, _, _, num_classes = ts.MODELS[model]
    x, y = ts._data(batch, num_classes)
    fast = {"native": False} if args.xla_convs else True
    net = ts._build(spec, fast_conv=fast, scan=False, dtype=None)
    opts = perf.compiler_options()
    run, compile_s, _ = ts.jax_split_step(net, optax.sgd(1e-3), x, y, compiler_options=opts)
    for _ in range(2):
        h.block(run())
    t0 = time.perf_counter()
    for _ in range(args.steps):
        h.block(run())
    step_ms = 1e3 * (time.perf_counter() - t0) / args.steps
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        for _ in range(args.steps):
            h.block(run())
        jax.profiler.stop_trace()
        ms, count = op_times(d, args.steps)
    h.header(f"profile_step {model} b{batch} ({'XLA convs' if args.xla_convs else 'train'})")
    total = sum(ms.values())
    print(f"step {step_ms:.1f} ms (untraced), traced ops {total:.1f} ms, compile {compile_s:.1f} s")
    rows = [
        {"op": k, "ms_per_step": v, "count_per_step": count[k], "share_of_step": v / step_ms}
        for k, v in sorted(ms.items(), key=lambda kv: -kv[1])
    ]
    print(
        h.format_table(rows[: args.top], ["op", "ms_per_step", "count_per_step", "share_of_step"])
    )
    doc = {"model": model, "batch": batch, "xla_convs": args.xla_convs, "step_ms": step_ms}
    doc |= {"traced_ms": total, "rows": rows}
    h.write_json("profile_step", doc, quick=args.quick, out=args.out)
    return doc


if __name__ == "__main__":
    allocator.relaunch()
    main()
