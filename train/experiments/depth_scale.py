"""Why deep NetResDeeps kill the ReLUs after ``fc1``: the residual stream grows with depth.

    python -m train.experiments.depth_scale --data-dir DATA --depths 1,10,100

Each ResBlock adds ``act(batch_norm(conv(x)))`` to its input; with ReLU (or any activation
whose output is mostly non-negative) every block adds a non-negative term, so the stream that
reaches ``fc1`` grows with the number of blocks. For NetResDeep with independent blocks at each
depth, freshly initialised (as ``python -m train --model netresdeep --model-kw n_blocks=D``
would build it, seed ``--seed``), this prints, on the first ``--batch`` training images in
training mode: the mean and standard deviation of ``fc1``'s input, the spread of ``fc1``'s
pre-activations across its units (their per-unit means) and across images, and how many of the
units are negative for every image: a ReLU there is dead before the first step.
"""

from __future__ import annotations

import argparse
import sys


def measure(
    depths: list[int],
    data_dir: str | None,
    *,
    seed: int = 0,
    batch: int = 64,
    activation: str | None = None,
    dataset: str = "cifar2",
    **dataset_kw,
) -> list[dict]:
    """One row per depth: fc1 input mean/std, pre-activation spreads, dead-at-init units."""
    import jax.numpy as jnp

    from relujax import data as rdata
    from relujax._src.models.layers import max_pool
    from relujax._src.training.build import build_model
    from relujax.training import TrainConfig

    ds = rdata.load_dataset(dataset, data_dir, **dataset_kw)
    n = min(batch, ds.n_train)
    x = rdata.normalize(jnp.asarray(ds.x_train[:n]), ds.mean, ds.std)
    rows = []
    for depth in depths:
        config = TrainConfig(
            model="netresdeep",
            model_kwargs={"n_blocks": depth},
            activation=activation,
            dataset=dataset,
            seed=seed,
        )
        m = build_model(config, ds.num_classes)
        out = max_pool(m.act1(m.conv1(x)), 2)
        out = max_pool(m.resblocks(out), 2).reshape(n, -1)
        pre = m.fc1(out)
        rows.append(
            {
                "depth": depth,
                "fc1_input_mean": float(out.mean()),
                "fc1_input_std": float(out.std()),
                "pre_spread_units": float(pre.mean(0).std()),
                "pre_spread_images": float(pre.std(0).mean()),
                "negative_for_every_image": int(jnp.sum(jnp.all(pre < 0, axis=0))),
                "units": int(pre.shape[1]),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.experiments.depth_scale", description=__doc__)
    p.add_argument("--data-dir")
    p.add_argument("--depths", default="1,10,100", help="comma-separated block counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--activation", help="an activation of relujax.nn (default relu)")
    a = p.parse_args(argv)
    try:
        depths = [int(d) for d in a.depths.split(",")]
    except ValueError:
        p.error(f"--depths: expected comma-separated integers, got {a.depths!r}")
    if any(d < 1 for d in depths):
        p.error(f"--depths: every depth must be >= 1, got {a.depths!r}")
    rows = measure(depths, a.data_dir, seed=a.seed, batch=a.batch, activation=a.activation)
    print(
        "| blocks | fc1 input mean | fc1 input sd | pre-activation spread, units | "
        "... images | units negative for every image |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['depth']} | {r['fc1_input_mean']:.2f} | {r['fc1_input_std']:.2f} "
            f"| {r['pre_spread_units']:.2f} | {r['pre_spread_images']:.2f} "
            f"| {r['negative_for_every_image']} of {r['units']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
