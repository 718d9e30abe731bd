"""How much a preset's first losses depend on its initial weights: the loss at step 0, per seed.

    python -m train.experiments.init_loss book-netresdeep --data-dir DATA --seeds 0-7

For each seed, builds the preset's model as `python -m train --seed S` would (the application's
own model builder) and prints the cross-entropy of the untrained model, in training mode, on the
first training batch the preset would take (the preset's batch size; the data in its stored
order, unaugmented). A model whose first epoch's mean loss differs from a published figure
(e.g. the book's NetResDeep, 100 applications of one block: 2.27 after epoch 1) can be compared
with the spread of this figure over seeds: PyTorch's seed-123 weights cannot be drawn in JAX.
"""

from __future__ import annotations

import argparse
import statistics
import sys


def losses(preset: str, seeds: list[int], data_dir: str | None, **overrides) -> list[float]:
    """The step-0 training loss of `preset`'s model for each of `seeds` (``overrides``: config
    fields to replace, e.g. a small dataset)."""
    import jax.numpy as jnp
    import optax

    from relujax import data as rdata
    from relujax._src.app.presets import resolve
    from relujax._src.training.build import build_model
    from relujax.training import TrainConfig

    config = TrainConfig(**{**resolve(preset), **overrides})
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    ds = rdata.load_dataset(config.dataset, config.data_dir, **config.dataset_kwargs)
    bs = min(config.batch_size, ds.n_train)
    x = rdata.normalize(jnp.asarray(ds.x_train[:bs]), ds.mean, ds.std)
    y = jnp.asarray(ds.y_train[:bs])
    out = []
    for seed in seeds:
        model = build_model(config.replace(seed=seed), ds.num_classes)
        logits = model(x)
        out.append(float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()))
    return out


def _seeds(text: str) -> list[int]:
    out = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        msg = f"expected ints and ranges like 0-7,123, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one seed, got {text!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.experiments.init_loss", description=__doc__)
    p.add_argument("preset", help="a preset name (python -m train --list-presets)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=_seeds, default=list(range(8)), help="e.g. 0-7 or 0-7,123")
    args = p.parse_args(argv)
    from relujax.training import ConfigError

    try:
        values = losses(args.preset, args.seeds, args.data_dir)
    except ConfigError as e:
        print(f"init_loss: {e}", file=sys.stderr)
        return 2
    for seed, value in zip(args.seeds, values, strict=True):
        print(f"seed {seed:4d}: step-0 loss {value:.3f}")
    print(
        f"{args.preset}: min {min(values):.3f}, median {statistics.median(values):.3f}, "
        f"max {max(values):.3f} over {len(values)} seeds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
