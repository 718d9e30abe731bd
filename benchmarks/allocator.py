"""Which memory allocator is fastest for XLA:CPU on this machine: glibc, glibc+hugetlb, tcmalloc.

    python -m benchmarks.allocator [--quick] [--rounds 3] [--out results.json]

The allocator is fixed when a process starts, so each candidate runs in its own worker process
(`RELUJAX_ALLOCATOR=system|hugetlb|tcmalloc`), and the workers take turns, round after round,
so that a slow spell of a shared machine hits every candidate alike. Each worker times, with the
median of its calls: a jitted element-wise pass `x * a + b` over 8, 64 and 256 MB of float32
(reported as GB/s of memory traffic, read + write), and a plain `nnx.jit` training step of
`NetResDeep` (10 blocks, batch 64). The table gives each candidate's figures and its speed-up
over glibc's default (`system`); the best per machine kind goes into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import _harness
from relujax._src import allocator

CANDIDATES = ("system", "hugetlb", "tcmalloc")


def _median_seconds(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(quick: bool) -> dict[str, float]:
    """Runs in the candidate's process: {workload: seconds}."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from relujax.models import NetResDeep

    out: dict[str, float] = {"allocator": allocator.describe()}
    axpb = jax.jit(lambda x: x * 1.0001 + 0.5)
    sizes_mb = (8,) if quick else (8, 64, 256)
    for mb in sizes_mb:
        x = jnp.ones((mb * 2**18,), jnp.float32)
        out[f"axpb_{mb}MB"] = _median_seconds(
            functools.partial(lambda x: axpb(x).block_until_ready(), x), 5 if quick else 20
        )
    model = NetResDeep(n_blocks=2 if quick else 10, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)
    xb = jnp.ones((8 if quick else 64, 32, 32, 3), jnp.float32)
    yb = jnp.zeros((xb.shape[0],), jnp.int32)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss_fn(model):
            logits = model(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    out["netresdeep_step"] = _median_seconds(
        lambda: step(model, opt, xb, yb).block_until_ready(), 3 if quick else 10
    )
    return out


def _run_worker(choice: str, quick: bool) -> dict[str, float]:
    env = dict(os.environ, **{allocator.ENV: choice})
    env.pop("LD_PRELOAD", None)
    env.update(allocator.plan(choice))
    env[allocator._MARK] = "1"
    cmd = [sys.executable, "-m", "benchmarks.allocator", "--worker"] + (
        ["--quick"] if quick else []
    )
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = _harness.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="turns per candidate (default 3)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.quick)))
        return {}
    candidates = [c for c in CANDIDATES if c == "system" or _available(c)]
    rounds = a.rounds or (1 if a.quick else 3)
    samples: dict[str, list[dict[str, float]]] = {c: [] for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            samples[c].append(_run_worker(c, a.quick))
    rows = []
    base = None
    for c in candidates:
        runs = samples[c]
        keys = [k for k in runs[0] if k != "allocator"]
        row: dict = {"candidate": c, "allocator": runs[0]["allocator"]}
        for k in keys:
            row[k] = statistics.median(r[k] for r in runs)
        base = base or row
        for k in keys:
            if k.startswith("axpb_"):
                mb = int(k[len("axpb_") : -2])
                row[f"{k} GB/s"] = 2 * mb * 2**20 / row[k] / 1e9
        row["step ms"] = row["netresdeep_step"] * 1e3
        row["step speed-up"] = base["netresdeep_step"] / row["netresdeep_step"]
        rows.append(row)
    _harness.header("XLA:CPU under each memory allocator (each in its own process, in turns)")
    cols = ["candidate", "allocator"] + [k for k in rows[0] if k.endswith("GB/s")]
    print(_harness.format_table(rows, cols + ["step ms", "step speed-up"]))
    payload = {"rounds": rounds, "rows": rows, "samples": samples}
    _harness.write_json("allocator", payload, quick=a.quick, out=a.out, argv=argv)
    return payload


def _available(choice: str) -> bool:
    try:
        return bool(allocator.plan(choice))
    except ValueError:
        return False


if __name__ == "__main__":
    main()
