"""How long one epoch of CIFAR-2 batches takes to produce on device, against a training epoch.

For one epoch of batches (batch 64, augmented with pad-4 crop + flip as the improved presets),
candidates timed in turn in one process (medians of alternating rounds; compile time apart):

* ``pipeline, per-batch jit``: a jitted ``get_batch`` dispatched once per batch (all batches
  kept and waited for), as a loop that feeds a separate step would;
* ``pipeline, one scan``: all batches of the epoch produced inside one ``lax.scan`` (no
  dispatch): the pipeline's raw on-device throughput;
* ``netdepth step + pipeline``: a NetDepth SGD step (lr 1e-2, as the book) that gathers and
  augments its own batch, as ``relujax.training`` does;
* ``netdepth step, fixed batch``: the same step on one pre-made batch: the difference from the
  previous row is what the input pipeline costs inside training.

Data: CIFAR-2 from ``--data-dir`` (default ``$RELUJAX_DATA``, else ``~/.cache/relujax``), else
the synthetic set of the same size (10,000 train images).

    python -m benchmarks.input_pipeline --data-dir DIR              # ~3 min on 2 CPU cores
    python -m benchmarks.input_pipeline --quick                     # 1,024 images, seconds
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import _harness as h
from relujax import data as rdata
from relujax._src import allocator


def _load(data_dir: str | None, quick: bool) -> rdata.Dataset:
    if quick:
        return rdata.load_dataset("synthetic", n_train=1024, n_test=256)
    try:
        return rdata.load_dataset("cifar2", data_dir, download=False)
    except rdata.DataError as e:
        print(f"note: {e}\nusing the synthetic set of the same size instead\n")
    return rdata.load_dataset("synthetic", n_train=10000, n_test=2000)


def main(argv: list[str] | None = None) -> dict:
    p = h.parser(__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="folder with CIFAR-2/10")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-model", action="store_true", help="skip the NetDepth comparison")
    args = p.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)

    t0 = time.perf_counter()
    ds = _load(args.data_dir, args.quick)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    x, y, _, _ = h.block(rdata.put_on_device(ds))
    put_s = time.perf_counter() - t0
    bs, n = args.batch_size, ds.n_train
    mean, std = jnp.asarray(ds.mean), jnp.asarray(ds.std)
    idx, _ = rdata.epoch_indices(n, bs, seed=0, epoch=0)
    keys = jax.random.split(jax.random.key(0), idx.shape[0])
    num_batches = idx.shape[0]

    compile_s: dict[str, float] = {}
    fns = {}
    batch, compile_s["pipeline, per-batch jit"] = h.compile_jitted(
        jax.jit(lambda i, k: rdata.get_batch(x, y, i, mean=mean, std=std, augment_key=k)),
        idx[0],
        keys[0],
    )
    fns["pipeline, per-batch jit"] = lambda: [batch(idx[i], keys[i]) for i in range(num_batches)]

    def scan_epoch(idx, keys):
        def body(acc, ik):
            xb, yb = rdata.get_batch(x, y, ik[0], mean=mean, std=std, augment_key=ik[1])
            return acc + xb.sum() + yb.sum(), None

        return jax.lax.scan(body, jnp.zeros((), jnp.float32), (idx, keys))[0]

    scanned, compile_s["pipeline, one scan"] = h.compile_jitted(jax.jit(scan_epoch), idx, keys)
    fns["pipeline, one scan"] = lambda: scanned(idx, keys)

    if not args.no_model:
        from flax import nnx

        from relujax.models import create_model

        model = create_model("netdepth", num_classes=ds.num_classes, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tx = optax.sgd(1e-2)
        opt = tx.init(params)

        def sgd(prm, opt, xb, yb):
            def loss_fn(prm):
                logits = nnx.merge(graphdef, prm, rest)(xb)
                return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

            updates, opt = tx.update(jax.grad(loss_fn)(prm), opt, prm)
            return optax.apply_updates(prm, updates), opt

        def step_pipeline(prm, opt, i, k):
            xb, yb = rdata.get_batch(x, y, i, mean=mean, std=std, augment_key=k)
            return sgd(prm, opt, xb, yb)

        fixed = rdata.get_batch(x, y, idx[0], mean=mean, std=std, augment_key=keys[0])
        name_p, name_f = "netdepth step + pipeline", "netdepth step, fixed batch"
        step_p, compile_s[name_p] = h.compile_jitted(
            jax.jit(step_pipeline), params, opt, idx[0], keys[0]
        )
        step_f, compile_s[name_f] = h.compile_jitted(jax.jit(sgd), params, opt, *fixed)

        def train_epoch(with_pipeline):
            def run():
                prm, o = params, opt
                for i in range(num_batches):
                    if with_pipeline:
                        prm, o = step_p(prm, o, idx[i], keys[i])
                    else:
                        prm, o = step_f(prm, o, *fixed)
                return prm

            return run

        fns[name_p] = train_epoch(True)
        fns[name_f] = train_epoch(False)

    times = h.time_alternating(fns, repeats=repeats, warmup=1)
    h.header(f"input pipeline: one epoch of {ds.name} batches")
    print(
        f"{ds.name} from {ds.source}: {n} training images, batch {bs}, {num_batches} batches"
        f"{' (the last one padded)' if n % bs else ''}, augmented; host load {load_s:.2f} s, "
        f"put_on_device {put_s:.3f} s\n"
    )
    rows = [
        {
            "epoch of batches": name,
            "compile s": compile_s[name],
            "median s": t["median"],
            "min s": t["min"],
            "images/s": n / t["median"],
        }
        for name, t in times.items()
    ]
    if not args.no_model:
        pipe, fixed_t = times[name_p]["median"], times[name_f]["median"]
        alone = times["pipeline, per-batch jit"]["median"]
        print(
            f"pipeline alone: {100 * alone / fixed_t:.1f}% of a NetDepth epoch; inside the step "
            f"it changes the epoch by {100 * (pipe - fixed_t) / fixed_t:+.1f}% (medians)\n"
        )
    print(h.format_table(rows, ["epoch of batches", "compile s", "median s", "min s", "images/s"]))
    payload = {
        "dataset": ds.name,
        "source": ds.source,
        "n_train": n,
        "batch_size": bs,
        "augment": True,
        "host_load_s": load_s,
        "put_on_device_s": put_s,
        "compile_s": compile_s,
        "times": times,
    }
    h.write_json("input_pipeline", payload, quick=args.quick, out=args.out, argv=argv)
    return payload


if __name__ == "__main__":
    allocator.relaunch()
    main()
