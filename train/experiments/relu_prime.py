"""Does ReLU'(0) matter? The experiment of Bertoin et al. (NeurIPS 2021) on CIFAR-2.

    python -m train.experiments.relu_prime --data-dir DATA --seeds 0 1 2 \
        --epochs 10 --out docs/relu_prime

For each seed, two copies of one model (same initial weights, same shuffled batches, plain SGD,
compute in --dtype, float32 weights) are trained side by side, one with ReLU'(0) = 0 (relujax's
and everybody's default) and one with ReLU'(0) = 1 (`relujax.relu(x, subgradient=1.0)`). They
differ only where a ReLU input is exactly 0, so the script also measures how often that happens:
every --check-every steps, on that step's batch and the subgradient-0 run's weights, it counts
the exact zeros at each ReLU's input and compares the two gradients (ReLU'(0) = 0 vs 1), in
float32 and in bfloat16 compute. Reports: the share of checked batches whose gradient changes,
the zero fraction per layer, the relative gradient difference, the relative distance between the
two runs' weights over training, and both runs' val accuracy per epoch. Writes `results.json` and
`relu_prime.png` to --out.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import relujax
from relujax.data import epoch_indices, get_batch, load_dataset
from relujax.models import create_model
from relujax.training import cross_entropy


class ZeroCount(nnx.Intermediate):
    """``[exact zeros, elements]`` of one ReLU's input in the last forward pass."""


def counting_relu(subgradient: float) -> type[nnx.Module]:
    """An NNX ReLU module class with ReLU'(0) = `subgradient` that counts exact-zero inputs."""

    class CountingReLU(nnx.Module):
        def __init__(self) -> None:
            self.zeros = ZeroCount(jnp.zeros((2,), jnp.float32))

        def __call__(self, x: jax.Array) -> jax.Array:
            count = jnp.sum(x == 0, dtype=jnp.float32)
            self.zeros[...] = jnp.stack([count, jnp.float32(x.size)])
            return relujax.relu(x, subgradient=subgradient)

    CountingReLU.__name__ = CountingReLU.__qualname__ = f"CountingReLU{subgradient:g}"
    return CountingReLU


def _zeros(model: nnx.Module) -> jax.Array:
    counts = [m.zeros[...] for _, m in nnx.iter_modules(model) if hasattr(m, "zeros")]
    return jnp.stack(counts)


def _build(model: str, seed: int, subgradient: float, dtype: Any, num_classes: int):
    net = create_model(
        model,
        rngs=nnx.Rngs(seed),
        num_classes=num_classes,
        activation=counting_relu(subgradient),
        dtype=dtype,
    )
    return nnx.split(net, nnx.Param, ...)


def _loss_fn(graphdef, rest, xb, yb):
    mask = jnp.ones(yb.shape, bool)

    def loss(params):
        net = nnx.merge(graphdef, params, rest, copy=True)
        logits = net(xb).astype(jnp.float32)
        value, _, correct = cross_entropy(logits, yb, mask)
        return value, (_zeros(net), correct)

    return loss


def _tree_norm(t) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(v.astype(jnp.float32))) for v in jax.tree.leaves(t)))


def run_seed(a: argparse.Namespace, ds, seed: int) -> dict[str, Any]:
    """Both runs of one seed; returns the per-check and per-epoch records."""
    dtype = jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32
    k = ds.num_classes
    gd = {s: _build(a.model, seed, s, dtype, k) for s in (0.0, 1.0)}
    gd32 = {s: _build(a.model, seed, s, jnp.float32, k) for s in (0.0, 1.0)}
    diffs = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.any(u != v), gd[0.0][1], gd[1.0][1]))
    assert not any(bool(d) for d in diffs), "the two runs must start from the same weights"
    tx = optax.sgd(a.lr)
    mean, std = ds.mean, ds.std
    x_tr, y_tr = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_te, y_te = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

    def make_step(s):
        graphdef, _, rest = gd[s]

        @jax.jit
        def step(params, opt_state, xb, yb):
            xb = xb.astype(dtype)
            grads = jax.grad(lambda p: _loss_fn(graphdef, rest, xb, yb)(p)[0])(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        return step

    steps = {s: make_step(s) for s in (0.0, 1.0)}

    @jax.jit
    def check(params, xb, yb):
        out = {}
        for name, table in (("float32", gd32), (a.dtype, gd)):
            g = {}
            for s in (0.0, 1.0):
                graphdef, _, rest = table[s]
                fn = _loss_fn(
                    graphdef, rest, xb.astype(jnp.float32 if table is gd32 else dtype), yb
                )
                (_, (zeros, _)), g[s] = jax.value_and_grad(fn, has_aux=True)(params)
            delta = jax.tree.map(lambda u, v: u - v, g[0.0], g[1.0])
            out[name] = {
                "zero_fraction": zeros[:, 0] / zeros[:, 1],
                "any_zero": jnp.sum(zeros[:, 0]) > 0,
                "changed": jnp.any(jnp.stack([jnp.any(d != 0) for d in jax.tree.leaves(delta)])),
                "rel_diff": _tree_norm(delta) / _tree_norm(g[0.0]),
            }
        return out

    def make_correct(s):
        graphdef, _, rest = gd[s]

        @jax.jit
        def batch_correct(params, xb, yb):
            net = nnx.merge(graphdef, params, rest, copy=True)
            return jnp.sum(jnp.argmax(net(xb.astype(dtype)), -1) == yb)

        return batch_correct

    corrects = {s: make_correct(s) for s in (0.0, 1.0)}  # compiled once, not once per epoch

    def accuracy(s, params):
        correct = 0
        for i in range(0, len(y_te), 500):
            rows = jnp.arange(i, min(i + 500, len(y_te)))
            xb, yb = get_batch(x_te, y_te, rows, mean=mean, std=std)
            correct += int(corrects[s](params, xb, yb))
        return correct / len(y_te)

    params = {s: gd[s][1] for s in (0.0, 1.0)}
    opt = {s: tx.init(params[s]) for s in (0.0, 1.0)}
    n = len(y_tr)
    checks, epochs, distance = [], [], []
    step_no = 0
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        idx, _ = epoch_indices(n, a.batch_size, seed=seed, epoch=epoch, drop_last=True)
        for row in range(idx.shape[0]):
            xb, yb = get_batch(x_tr, y_tr, idx[row], mean=mean, std=std)
            if step_no % a.check_every == 0:
                c = jax.device_get(check(params[0.0], xb, yb))
                checks.append(
                    {
                        "step": step_no,
                        **{
                            name: {
                                "zero_fraction": [float(z) for z in v["zero_fraction"]],
                                "any_zero": bool(v["any_zero"]),
                                "changed": bool(v["changed"]),
                                "rel_diff": float(v["rel_diff"]),
                            }
                            for name, v in c.items()
                        },
                    }
                )
                delta = jax.tree.map(lambda u, v: u - v, params[0.0], params[1.0])
                distance.append(
                    {"step": step_no, "rel": float(_tree_norm(delta) / _tree_norm(params[0.0]))}
                )
            for s in (0.0, 1.0):
                params[s], opt[s] = steps[s](params[s], opt[s], xb, yb)
            step_no += 1
        rec = {"epoch": epoch + 1, "val_s0": accuracy(0.0, params[0.0])}
        rec["val_s1"] = accuracy(1.0, params[1.0])
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        epochs.append(rec)
        print(
            f"seed {seed} epoch {epoch + 1}: val relu'(0)=0 {rec['val_s0']:.4f}, "
            f"=1 {rec['val_s1']:.4f}, weights apart {distance[-1]['rel']:.2e}, "
            f"{rec['seconds']:.0f} s",
            flush=True,
        )
    return {"seed": seed, "checks": checks, "distance": distance, "epochs": epochs}


def summarize(results: list[dict[str, Any]], dtypes: list[str]) -> dict[str, Any]:
    """Shares of changed gradients, mean zero fractions and accuracy gaps over all seeds."""
    out: dict[str, Any] = {}
    for name in dtypes:
        cs = [c[name] for r in results for c in r["checks"]]
        out[name] = {
            "checks": len(cs),
            "gradient_changed_share": float(np.mean([c["changed"] for c in cs])),
            "batches_with_a_zero_share": float(np.mean([c["any_zero"] for c in cs])),
            "zero_fraction_per_layer": np.mean([c["zero_fraction"] for c in cs], 0).tolist(),
            "median_rel_grad_diff": float(np.median([c["rel_diff"] for c in cs])),
        }
    out["final_val"] = [
        {"seed": r["seed"], "s0": r["epochs"][-1]["val_s0"], "s1": r["epochs"][-1]["val_s1"]}
        for r in results
    ]
    out["final_weight_distance"] = [r["distance"][-1]["rel"] for r in results]
    return out


def plot(results: list[dict[str, Any]], dtypes: list[str], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for name, style in zip(dtypes, ("-", "--"), strict=False):
        r = results[0]
        zf = np.array([c[name]["zero_fraction"] for c in r["checks"]])
        steps = [c["step"] for c in r["checks"]]
        for layer in range(zf.shape[1]):
            axes[0].plot(steps, zf[:, layer], style, label=f"{name} relu{layer + 1}")
    axes[0].set_yscale("symlog", linthresh=1e-7)
    axes[0].set_title(f"exact zeros at ReLU inputs (seed {results[0]['seed']})")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    for r in results:
        d = r["distance"]
        axes[1].plot([x["step"] for x in d], [x["rel"] for x in d], label=f"seed {r['seed']}")
    axes[1].set_yscale("log")
    axes[1].set_title("||w(relu'(0)=0) - w(relu'(0)=1)|| / ||w||")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    for i, r in enumerate(results):
        ep = [e["epoch"] for e in r["epochs"]]
        c = plt.get_cmap("tab10")(i)
        axes[2].plot(ep, [e["val_s0"] for e in r["epochs"]], "-", color=c, label=f"s{r['seed']} 0")
        axes[2].plot(ep, [e["val_s1"] for e in r["epochs"]], "--", color=c, label=f"s{r['seed']} 1")
    axes[2].set_title("val accuracy (solid: relu'(0)=0, dashed: 1)")
    axes[2].set_xlabel("epoch")
    axes[2].legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.experiments.relu_prime", description=__doc__)
    p.add_argument("--data-dir")
    p.add_argument("--model", default="netres", help="a relu model of relujax.models")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--check-every", type=int, default=20)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/relu_prime"))
    a = p.parse_args(argv)
    for name in ("epochs", "batch_size", "check_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    ds = load_dataset("cifar2", a.data_dir)
    a.out.mkdir(parents=True, exist_ok=True)
    dtypes = ["float32"] if a.dtype == "float32" else ["float32", a.dtype]
    results = []
    for seed in a.seeds:
        results.append(run_seed(a, ds, seed))
        summary = summarize(results, dtypes)
        payload = {"command": " ".join(["python -m train.experiments.relu_prime", *sys.argv[1:]])}
        payload.update(config=vars(a) | {"out": str(a.out)}, summary=summary, runs=results)
        payload["jax"] = jax.__version__
        payload["device"] = str(jax.devices()[0].device_kind)
        (a.out / "results.json").write_text(json.dumps(payload, indent=1))
    plot(results, dtypes, a.out / "relu_prime.png")
    print(json.dumps(summarize(results, dtypes), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
