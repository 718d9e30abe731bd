"""``benchmarks.train_step``'s variants: an op-kind profile, and compile time against depth.

``profile``: each JAX step is timed untraced, then traced with ``jax.profiler`` (Perfetto JSON,
no TensorBoard needed); the traced time of every executed op is summed by kind (the HLO name
without its numeric suffix: ``ffi_call``, ``transpose_copy_fusion``, ``ynn_fusion``, ...), per
step. On XLA:CPU a library convolution (Eigen) runs on the intra-op pool and its trace event
covers only the dispatch, so its time shows as the gap between the step and the op total; a
native kernel (``ffi_call``) is traced in full.

``depths``: NetResDeep (independent blocks) at each depth: the app step with its blocks
unrolled (``scan_blocks=False``) and scanned (``scan_blocks=True``), and the plain step on the
default model of that depth. Compile time (trace + lower + compile) and step time (median of
alternating rounds) per depth.
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

from benchmarks import _harness as h
from benchmarks import _steps as S

_HOST = ("$", "ThunkExecutor", "PjitFunction", "SlinkyThreadPool", "end: ")
DEPTH_IMPLS = ("app:unrolled", "app:scan", "plain")
DEPTH_COLUMNS = ["depth", "batch", "impl", "compile_s", "step_ms", "peak_MiB"]
PROFILE_COLUMNS = ["impl", "op", "ms_per_step", "count_per_step", "share_of_step"]


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


def profile(models: list[str], batches: list[int], args: Any) -> list[dict[str, Any]]:
    """Per-op-kind time of each JAX step in ``args.impls`` (PyTorch's are not traced)."""
    impls = [i for i in args.impls if not i.startswith("torch")]
    rows = []
    for name in models:
        for batch in batches:
            for impl in impls:
                step = S.build(impl, name, batch, dtype=args.dtype)
                for _ in range(2):
                    h.block(step.run())
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    h.block(step.run())
                step_ms = 1e3 * (time.perf_counter() - t0) / args.steps
                with tempfile.TemporaryDirectory() as d:
                    jax.profiler.start_trace(d, create_perfetto_trace=True)
                    for _ in range(args.steps):
                        h.block(step.run())
                    jax.profiler.stop_trace()
                    ms, count = op_times(d, args.steps)
                total = sum(ms.values())
                print(
                    f"\n{name} b{batch} {impl}: step {step_ms:.1f} ms (untraced), traced ops "
                    f"{total:.1f} ms, compile {step.compile_s:.1f} s"
                )
                these = [
                    {
                        "model": name,
                        "batch": batch,
                        "impl": impl,
                        "op": k,
                        "ms_per_step": v,
                        "count_per_step": count[k],
                        "share_of_step": v / step_ms,
                        "step_ms": step_ms,
                    }
                    for k, v in sorted(ms.items(), key=lambda kv: -kv[1])
                ]
                print(h.format_table(these[: args.top], PROFILE_COLUMNS))
                rows.extend(these)
    return rows


def _depth_step(impl: str, depth: int, batch: int, dtype: str) -> S.Step:
    kwargs = {"n_blocks": depth}
    if impl == "plain":
        return S.plain_step("netresdeep", batch, dtype=dtype, model_kwargs=kwargs)
    kwargs["scan_blocks"] = impl == "app:scan"
    return S.app_step("netresdeep", batch, dtype=dtype, model_kwargs=kwargs)


def depths(depth_list: list[int], batch: int, args: Any) -> list[dict[str, Any]]:
    """Compile time and step time of NetResDeep's JAX steps at each depth."""
    rows = []
    for depth in depth_list:
        steps = {impl: _depth_step(impl, depth, batch, args.dtype) for impl in DEPTH_IMPLS}
        runners = {impl: s.run for impl, s in steps.items()}
        times = h.time_alternating(runners, repeats=args.repeats, settle=args.settle)
        for impl, t in times.items():
            s = steps[impl]
            row = {
                "depth": depth,
                "batch": batch,
                "dtype": args.dtype,
                "impl": impl,
                "compile_s": s.compile_s,
                "step_ms": 1e3 * t["median"],
                "peak_MiB": None if s.peak_bytes is None else s.peak_bytes / 2**20,
                "samples": t["samples"],
            }
            rows.append(row)
            print(
                f"  depth {depth:4d} {impl:13s} compile {row['compile_s']:6.1f} s "
                f"step {row['step_ms']:9.1f} ms",
                flush=True,
            )
    return rows
