"""How long one epoch of CIFAR-2 batches takes to produce on device, against a training epoch.

Measures, for one epoch of batches (batch 64, augmented: pad-4 crop + flip, as the improved
presets):

* ``pipeline (per-batch jit)``: a jitted ``get_batch`` called once per batch, as a training
  loop that feeds batches to a separate step would;
* ``pipeline (one scan)``: all batches of the epoch produced inside one ``lax.scan`` (no
  dispatch), the pipeline's raw on-device throughput;
* ``netdepth step + pipeline``: a NetDepth SGD training step that gathers and augments its own
  batch (what relujax.training does), against ``netdepth step, fixed batch``: the same step on
  one pre-made batch, so the difference is what the pipeline costs inside training.

Compile time is reported apart (the first call); times are medians over ``--repeats`` epochs.
Uses CIFAR-2 from ``--data-dir`` (default ``$RELUJAX_DATA``, else ``../shared/data`` when it is
there), else the synthetic set of the same size. Prints a table and writes JSON.

    python -m benchmarks.input_pipeline --data-dir ../shared/data --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from relujax import data as rdata

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(data_dir: str | None) -> rdata.Dataset:
    candidates = [data_dir] if data_dir else [None, str(ROOT.parent / "shared" / "data")]
    for d in candidates:
        try:
            return rdata.load_dataset("cifar2", d, download=False)
        except rdata.DataError as e:
            last = e
    print(f"note: {last}; using the synthetic set of the same size instead")
    return rdata.load_dataset("synthetic", n_train=10000, n_test=2000)


def _time(fn, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median of `repeats` later calls), seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(0))
    first = time.perf_counter() - t0
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(r + 1))
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-model", action="store_true", help="skip the NetDepth comparison")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "input_pipeline.json"))
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    ds = _load(args.data_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    x, y, _, _ = jax.block_until_ready(rdata.put_on_device(ds))
    put_s = time.perf_counter() - t0
    bs, n = args.batch_size, ds.n_train
    mean, std = jnp.asarray(ds.mean), jnp.asarray(ds.std)
    key = jax.random.key(0)

    def epoch_keys(epoch, num):
        return jax.random.split(jax.random.fold_in(key, epoch), num)

    batch = jax.jit(lambda i, k: rdata.get_batch(x, y, i, mean=mean, std=std, augment_key=k))

    def per_batch(epoch):
        idx, _ = rdata.epoch_indices(n, bs, seed=0, epoch=epoch)
        keys = epoch_keys(epoch, idx.shape[0])
        # Keep every batch and wait for all: the CPU runs independent dispatches concurrently.
        return [batch(idx[i], keys[i]) for i in range(idx.shape[0])]

    @jax.jit
    def scanned(idx, keys):
        def body(acc, ik):
            xb, yb = rdata.get_batch(x, y, ik[0], mean=mean, std=std, augment_key=ik[1])
            return acc + xb.sum() + yb.sum(), None

        return jax.lax.scan(body, jnp.zeros((), jnp.float32), (idx, keys))[0]

    def one_scan(epoch):
        idx, _ = rdata.epoch_indices(n, bs, seed=0, epoch=epoch)
        return scanned(idx, epoch_keys(epoch, idx.shape[0]))

    num_batches = -(-n // bs)
    rows = {}
    rows["pipeline (per-batch jit)"] = _time(per_batch, args.repeats)
    rows["pipeline (one scan)"] = _time(one_scan, args.repeats)

    if not args.no_model:
        try:
            from flax import nnx

            from relujax.models import create_model
        except ImportError as e:  # the models land separately
            print(f"note: no NetDepth comparison ({e})")
        else:
            model = create_model("netdepth", rngs=nnx.Rngs(0))
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            tx = optax.sgd(1e-2)

            def loss_fn(prm, xb, yb):
                logits = nnx.merge(graphdef, prm, rest)(xb)
                return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

            def sgd(prm, opt, xb, yb):
                grads = jax.grad(loss_fn)(prm, xb, yb)
                updates, opt = tx.update(grads, opt, prm)
                return optax.apply_updates(prm, updates), opt

            @jax.jit
            def step_pipeline(prm, opt, i, k):
                xb, yb = rdata.get_batch(x, y, i, mean=mean, std=std, augment_key=k)
                return sgd(prm, opt, xb, yb)

            fixed = rdata.get_batch(x, y, jnp.arange(bs), mean=mean, std=std)
            step_fixed = jax.jit(lambda prm, opt: sgd(prm, opt, *fixed))

            def train_epoch(with_pipeline):
                def run(epoch):
                    prm, opt = params, tx.init(params)
                    idx, _ = rdata.epoch_indices(n, bs, seed=0, epoch=epoch)
                    keys = epoch_keys(epoch, idx.shape[0])
                    for i in range(idx.shape[0]):
                        if with_pipeline:
                            prm, opt = step_pipeline(prm, opt, idx[i], keys[i])
                        else:
                            prm, opt = step_fixed(prm, opt)
                    return prm

                return run

            rows["netdepth step + pipeline"] = _time(train_epoch(True), args.repeats)
            rows["netdepth step, fixed batch"] = _time(train_epoch(False), args.repeats)

    device = jax.devices()[0]
    machine = f"{device.platform} {device.device_kind}, {os.cpu_count()} CPU cores"
    print(f"\n{ds.name} from {ds.source}: {n} training images, batch {bs}, {num_batches} batches")
    print(f"machine: {machine}, jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}")
    print(f"host load {load_s:.2f} s, put_on_device {put_s:.3f} s\n")
    print(f"{'epoch of batches':<30} {'first (compile)':>16} {'median':>10} {'images/s':>12}")
    for name, (first, med) in rows.items():
        print(f"{name:<30} {first:>14.3f} s {med:>8.3f} s {n / med:>12,.0f}")
    result = {
        "dataset": ds.name,
        "source": ds.source,
        "n_train": n,
        "batch_size": bs,
        "augment": True,
        "machine": machine,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "load_average": os.getloadavg()[0],
        "host_load_s": load_s,
        "put_on_device_s": put_s,
        "epochs": {
            k: {"first_s": f, "median_s": m, "images_per_s": n / m} for k, (f, m) in rows.items()
        },
    }
    if args.json:
        out = pathlib.Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
