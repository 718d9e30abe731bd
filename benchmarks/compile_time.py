"""Compile time and step time against depth: unrolled vs scanned stacks of blocks.

NetResDeep (independent blocks) at 10, 50, 100 and 200 ResBlocks, batch 64, float32, full SGD
training step (``jax.jit`` over ``nnx.split`` state, as ``benchmarks.train_step``), on the
default backend. Three constructions:

* ``unrolled``: a Python loop over the blocks with plain ``lax`` convolutions (XLA sees N copies);
* ``unrolled+conv+opts``: the same with ``relujax._src.perf.conv_general_dilated`` and
  ``perf.compiler_options()``: what ``python -m train`` compiles (on CPU:
  relujax's native convolution kernels where they apply, XLA's Eigen ones elsewhere);
* ``scan+conv+opts``: ``jax.lax.scan`` over the stacked blocks, with that convolution and
  options;
* ``scan``: ``scan`` with plain ``lax`` convolutions: on XLA:CPU its backward runs a naive
  convolution loop (>100x slower), so it is timed once, only at the smallest depth.

Compile time is trace + lower + compile of the step; step time is the median of alternating
rounds after a warm-up.

    python -m benchmarks.compile_time             # depths 10, 50, 100, 200
    python -m benchmarks.compile_time --quick     # depths 2, 8, batch 8
"""

from __future__ import annotations

import sys
from typing import Any

import jax.numpy as jnp
import optax

from benchmarks import _harness as h
from benchmarks.train_step import _build, _data, jax_split_step
from relujax._src import perf

# label -> (fast_conv, scan, with perf.compiler_options())
VARIANTS = {
    "unrolled": (False, False, False),
    "unrolled+conv+opts": (True, False, True),
    "scan+conv+opts": (True, True, True),
    "scan": (False, True, False),
}


def run(depths: list[int], batch: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    x, y = _data(batch, 2)
    for depth in depths:
        runners, compile_s, mem = {}, {}, {}
        for label, (fast, scan, opts) in VARIANTS.items():
            if label == "scan" and depth != depths[0]:
                continue  # the pathological one: only at the smallest depth
            model = _build(
                {"name": "netresdeep", "n_blocks": depth},
                fast_conv=fast,
                scan=scan,
                dtype=jnp.float32,
            )
            runners[label], compile_s[label], mem[label] = jax_split_step(
                model,
                optax.sgd(1e-3),
                x,
                y,
                compiler_options=perf.compiler_options() if opts else None,
            )
        slow = {"scan": runners.pop("scan")} if "scan" in runners else {}
        times = h.time_alternating(runners, repeats=repeats)
        if slow:
            times.update(h.time_alternating(slow, repeats=1, warmup=1))
        for label, t in times.items():
            m = mem[label]
            row = {
                "depth": depth,
                "variant": label,
                "backend": h.machine_info()["backend"],
                "compile_s": compile_s[label],
                "step_ms": 1e3 * t["median"],
                "temp_MiB": None if m is None else m["temp"] / 2**20,
                "samples": t["samples"],
            }
            rows.append(row)
            print(
                f"  depth {depth:4d} {label:14s} compile {row['compile_s']:6.1f} s "
                f"step {row['step_ms']:9.1f} ms",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--depths", default=None, help="comma list (default 10,50,100,200)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (quick: 8)")
    args = p.parse_args(argv)
    depths = (
        [int(d) for d in args.depths.split(",")]
        if args.depths
        else ([2, 8] if args.quick else [10, 50, 100, 200])
    )
    batch = args.batch_size or (8 if args.quick else 64)
    h.header(f"compile_time (batch {batch})")
    rows = run(depths, batch, args.repeats or (3 if args.quick else 5))
    cols = ["depth", "variant", "compile_s", "step_ms", "temp_MiB"]
    print("\n" + h.format_table(rows, cols))
    h.write_json(
        "compile_time",
        {"batch": batch, "rows": rows, "argv": sys.argv[1:]},
        quick=args.quick,
        out=args.out,
    )
    return {"rows": rows}


if __name__ == "__main__":
    main()
