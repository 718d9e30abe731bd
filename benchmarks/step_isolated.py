"""Training step of one model, JAX vs PyTorch, each alone in its own process.

``benchmarks.train_step`` alternates the candidates inside one process, which keeps ratios fair
under a changing load but lets the libraries disturb each other (PyTorch's OpenMP workers
busy-wait after a parallel region; each library's buffers push the other's out of the caches).
Here every sample is a fresh child process that runs only its own framework: it builds the
model, warms up and times ``--steps`` consecutive steps (as a training loop runs them); parent
rounds alternate JAX and PyTorch children, and the table reports the medians over all timed
steps of each. The JAX child runs what ``python -m train`` compiles (the model as built by
default, ``relujax.policy.compiler_options()``; plain ``jax.jit`` over ``nnx.split`` state,
donated).

    python -m benchmarks.step_isolated                      # NetResDeep (100 blocks), batch 64
    python -m benchmarks.step_isolated --models netresdeep,resnet20 --rounds 3
    python -m benchmarks.step_isolated --quick              # netresdeep2, batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import _harness as h


def _child(framework: str, model: str, batch: int, steps: int) -> dict[str, Any]:
    from benchmarks import train_step as ts

    spec, ctor, tkw, num_classes = ts.MODELS[model]
    x, y = ts._data(batch, num_classes)
    if framework == "jax":
        import jax.numpy as jnp
        import optax

        from relujax._src import perf

        built = ts._build(spec, fast_conv=None, scan=False, dtype=jnp.float32)  # as the app
        run, compile_s, _ = ts.jax_split_step(
            built, optax.sgd(1e-3), x, y, compiler_options=perf.compiler_options()
        )
    else:
        run, compile_s, _ = ts.torch_step(ctor, tkw, x, y, compile_=False, bf16=False)
    if framework == "jax":
        import jax

        wait = jax.block_until_ready
    else:
        wait = h.block  # synchronizes CUDA when PyTorch runs there
    for _ in range(3):
        wait(run())
    samples = []
    for _ in range(steps):
        t0 = time.perf_counter()
        wait(run())
        samples.append(time.perf_counter() - t0)
    return {"samples": samples, "compile_s": compile_s}


def _spawn(framework: str, model: str, batch: int, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.step_isolated", "--child", framework]
    cmd += ["--models", model, "--batch-size", str(batch), "--steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{framework} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="comma list (default netresdeep)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (quick: 8)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per child (default 10)")
    p.add_argument("--rounds", type=int, default=None, help="JAX/PyTorch child pairs (default 3)")
    p.add_argument("--child", choices=["jax", "torch"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    default = ["netresdeep2"] if args.quick else ["netresdeep"]
    models = args.models.split(",") if args.models else default
    batch = args.batch_size or (8 if args.quick else 64)
    steps = args.steps or (3 if args.quick else 10)
    if args.child:
        print(json.dumps(_child(args.child, models[0], batch, steps)))
        return {}
    rounds = args.rounds or (1 if args.quick else 3)
    frameworks = ["jax"] + (["torch"] if not args.no_torch and h.torch_available() else [])
    h.header(f"step_isolated (batch {batch}, {rounds} rounds x {steps} steps per process)")
    rows = []
    for model in models:
        got: dict[str, list[float]] = {f: [] for f in frameworks}
        compile_s: dict[str, list[float]] = {f: [] for f in frameworks}
        for _ in range(rounds):
            for f in frameworks:
                out = _spawn(f, model, batch, steps)
                got[f].extend(out["samples"])
                if out["compile_s"] is not None:
                    compile_s[f].append(out["compile_s"])
        ref = statistics.median(got["torch"]) if "torch" in got else None
        for f in frameworks:
            med = statistics.median(got[f])
            row = {
                "model": model,
                "batch": batch,
                "impl": "relujax (python -m train's step)" if f == "jax" else "torch eager",
                "step_ms": 1e3 * med,
                "images_per_s": batch / med,
                "vs_torch": None if ref is None else ref / med,
                "compile_s": statistics.median(compile_s[f]) if compile_s[f] else None,
                "samples": [round(v, 6) for v in got[f]],
            }
            rows.append(row)
            print(f"  {model:14s} b{batch} {row['impl']:34s} {row['step_ms']:9.1f} ms", flush=True)
    cols = ["model", "batch", "impl", "step_ms", "images_per_s", "vs_torch", "compile_s"]
    print("\n" + h.format_table(rows, cols))
    doc = {"rows": rows, "rounds": rounds, "steps": steps, "argv": sys.argv[1:]}
    h.write_json("step_isolated", doc, quick=args.quick, out=args.out)
    return {"rows": rows}


if __name__ == "__main__":
    main()
