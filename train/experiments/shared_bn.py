"""Why the book's NetResDeep fails in eval mode: one BatchNorm's running statistics, 100 depths.

    python -m train.experiments.shared_bn runs/repro/book-netresdeep --data-dir DATA \
        --json docs/quirks/shared_bn.json --plot docs/quirks/shared_bn.png

The book's ``nn.Sequential(*(100 * [ResBlock(32)]))`` applies ONE ResBlock 100 times, so one
BatchNorm sees 100 inputs per training step, each with its own statistics, and updates its
running statistics after each (momentum 0.1): they end as a moving average in which the last
applications weigh most (depth 100 has weight 0.1, depth 90 0.035, depth 50 0.0006). Eval mode
(``model.eval()``) then normalises every depth with those.

For the run's last checkpoint, this measures, per depth, the statistics of the shared
BatchNorm's input over the training set in training mode (what the network learnt with: each
depth normalised by its own batch statistics), compares them with the shared running
statistics, and evaluates the validation set in eval mode twice: with the shared running
statistics (what ``model.eval()`` does) and with each depth's own statistics (what 100
independent BatchNorms would have kept). If the second recovers the accuracy that the first
loses, the shared running statistics are the whole cause. Each figure is checked against the
model's own forward pass first (training and eval mode).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np


def _forward(model, x, stats):
    """(logits, per-depth batch mean (D, C), per-depth unbiased batch var (D, C)).

    ``stats`` None: each depth normalised with its batch statistics (training mode); else a pair
    of (D, C) arrays, the mean and variance each depth is normalised with (eval mode).
    """
    from relujax._src.models.layers import max_pool

    stack = model.resblocks
    block, bn = stack.block, stack.block.batch_norm
    out = max_pool(model.act1(model.conv1(x)), 2)
    means, variances = [], []
    for d in range(stack.n):
        h = block.conv(out).astype(jnp.float32)
        mean = jnp.mean(h, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(h - mean), axis=(0, 1, 2))
        n = h.size // h.shape[-1]
        means.append(mean)
        variances.append(var * (n / (n - 1)))
        if stats is not None:
            mean, var = stats[0][d], stats[1][d]
        y = (h - mean) * jax.lax.rsqrt(var + bn.epsilon) * bn.scale[...] + bn.bias[...]
        out = block.act(y.astype(out.dtype)) + out
    out = max_pool(out, 2)
    out = model.act2(model.fc1(out.reshape(out.shape[0], -1)))
    return model.fc2(out), jnp.stack(means), jnp.stack(variances)


def analyse(folder: pathlib.Path, data_dir: str | None, batch_size: int = 250) -> dict:
    """The per-depth statistics and the two eval-mode accuracies for the run in ``folder``."""
    from flax import nnx

    from relujax import data as rdata
    from relujax._src.training.build import RunState
    from relujax._src.training.checkpoint import Checkpointer
    from relujax.training import TrainConfig, prepare_run

    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(f"shared_bn: {folder} has no summary.json (not a finished run folder)")
    config = TrainConfig.from_dict(json.loads(summary_path.read_text())["config"])
    if not config.model_kwargs.get("shared_blocks"):
        raise SystemExit(f"shared_bn: {folder} is not a shared-block NetResDeep run")
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    ds = rdata.load_dataset(config.dataset, config.data_dir, **config.dataset_kwargs)
    run = prepare_run(config, ds)
    tree, meta = Checkpointer(folder / "checkpoints").restore(run.state.tree())
    state = RunState.from_tree(tree)
    model = nnx.merge(run.train_graphdef, state.params, state.rest)
    graphdef, weights = nnx.split(model)
    d = run.data

    @jax.jit
    def forward(weights, x, stats):
        return _forward(nnx.merge(graphdef, weights), x, stats)

    def batch(x, rows):
        xb = jnp.take(x, jnp.asarray(rows), axis=0)
        return rdata.normalize(xb, d.mean, d.std).astype(jnp.float32)

    # The model's own forward, to check ours against: training mode, then eval mode.
    bn = model.resblocks.block.batch_norm
    per_depth = (model.resblocks.n, bn.num_features)
    shared = (jnp.broadcast_to(bn.mean[...], per_depth), jnp.broadcast_to(bn.var[...], per_depth))
    probe = batch(d.x_test, np.arange(min(64, ds.n_test)))
    ours_train, _, _ = forward(weights, probe, None)
    ours_eval, _, _ = forward(weights, probe, shared)
    theirs_train = nnx.clone(model)(probe)
    eval_model = nnx.clone(model)
    eval_model.eval()
    theirs_eval = eval_model(probe)
    check = {
        "train_mode_max_abs_diff": float(jnp.max(jnp.abs(ours_train - theirs_train))),
        "eval_mode_max_abs_diff": float(jnp.max(jnp.abs(ours_eval - theirs_eval))),
    }

    # Per-depth statistics over the training set, in training mode, the run's batch size.
    bs, sums = config.batch_size, None
    n_batches = ds.n_train // bs
    for i in range(n_batches):
        _, m, v = forward(weights, batch(d.x_train, np.arange(i * bs, (i + 1) * bs)), None)
        sums = (m, v) if sums is None else (sums[0] + m, sums[1] + v)
    own = (sums[0] / n_batches, sums[1] / n_batches)

    def accuracy(stats) -> float:
        correct = 0
        for start in range(0, ds.n_test, batch_size):
            rows = np.arange(start, min(start + batch_size, ds.n_test))
            logits, _, _ = forward(weights, batch(d.x_test, rows), stats)
            correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.take(d.y_test, rows)))
        return correct / ds.n_test

    run_mean, run_var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
    own_mean, own_var = np.asarray(own[0]), np.asarray(own[1])
    shift = np.mean(np.abs(own_mean - run_mean) / np.sqrt(run_var + bn.epsilon), axis=1)
    ratio = np.mean(own_var / run_var, axis=1)
    n = own_mean.shape[0]
    weights_ema = bn.momentum * (1 - bn.momentum) ** np.arange(n - 1, -1, -1)
    ema_mean = weights_ema @ own_mean / weights_ema.sum()
    return {
        "run": folder.name,
        "epoch": meta["epoch"],
        "n_blocks": n,
        "check": check,
        "val_eval_mode_shared_stats": accuracy(shared),
        "val_eval_mode_per_depth_stats": accuracy(own),
        "mean_shift_in_running_sd": shift.tolist(),
        "var_over_running_var": ratio.tolist(),
        "running_mean_vs_ema_of_depths": float(
            np.max(np.abs(ema_mean - run_mean)) / np.max(np.abs(run_mean))
        ),
    }


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = np.arange(1, result["n_blocks"] + 1)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(depth, result["mean_shift_in_running_sd"])
    ax[0].set(xlabel="depth (application of the shared block)", yscale="log")
    ax[0].set_ylabel("|mean - running mean| / running sd")
    ax[1].plot(depth, result["var_over_running_var"])
    ax[1].axhline(1.0, color="k", lw=0.8, ls="--")
    ax[1].set(xlabel="depth (application of the shared block)", yscale="log")
    ax[1].set_ylabel("var / running var")
    fig.suptitle(
        f"{result['run']}: the shared BatchNorm's input per depth vs its running statistics"
        f" (eval mode val {result['val_eval_mode_shared_stats']:.3f}; per-depth statistics"
        f" {result['val_eval_mode_per_depth_stats']:.3f})",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.experiments.shared_bn", description=__doc__)
    p.add_argument("run", type=pathlib.Path, help="a finished book-netresdeep run folder")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=pathlib.Path, default=None, help="write the result here")
    p.add_argument("--plot", type=pathlib.Path, default=None, help="draw the per-depth figure")
    args = p.parse_args(argv)
    result = analyse(args.run, args.data_dir)
    shift, ratio = result["mean_shift_in_running_sd"], result["var_over_running_var"]
    print(f"{result['run']} (epoch {result['epoch']}, {result['n_blocks']} applications)")
    print(f"  check vs the model's own forward: {result['check']}")
    print(f"  val, eval mode, shared running statistics: {result['val_eval_mode_shared_stats']}")
    print(
        f"  val, eval mode, each depth's own statistics: {result['val_eval_mode_per_depth_stats']}"
    )
    for dep in sorted({1, 2, 5, 10, 25, 50, 75, 90, 99, result["n_blocks"]}):
        if dep <= result["n_blocks"]:
            print(
                f"  depth {dep:3d}: mean shift {shift[dep - 1]:8.3f} running sd, "
                f"var / running var {ratio[dep - 1]:8.3f}"
            )
    print(
        f"  running mean vs the momentum-weighted mean of the depths' means: "
        f"{result['running_mean_vs_ema_of_depths']:.3f} (max abs diff / max abs)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
