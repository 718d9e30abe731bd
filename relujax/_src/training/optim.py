"""Optimizer, learning-rate schedule with warm-up, and the weight-decay mask."""

from __future__ import annotations

import jax
import optax
from flax import nnx

from relujax._src.nn.activations import PReLU, RReLU
from relujax._src.training.config import TrainConfig

# Modules whose parameters are never decayed under decay_filter="kernels": normalisation
# scales and offsets, and learned activation slopes (He et al. 2015 decay no PReLU slope).
_NO_DECAY_MODULES = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm, PReLU, RReLU)


def decay_mask(model: nnx.Module, params: nnx.State, *, decay_filter: str = "kernels") -> nnx.State:
    """A bool tree like `params`: True where the optimizer applies weight decay.

    "kernels" decays only weights with 2 or more dimensions (conv and linear kernels) that do not
    belong to a normalisation layer or a learned activation: biases, BatchNorm scale/offset and
    PReLU slopes are excluded. "all" decays every parameter (PyTorch's `weight_decay=`).

    Example:
        >>> from flax import nnx
        >>> m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> _, params = nnx.split(m, nnx.Param)
        >>> mask = decay_mask(m, params)
        >>> mask["kernel"].get_value(), mask["bias"].get_value()
        (True, False)
    """
    if decay_filter == "all":
        return jax.tree.map(lambda _: True, params)
    if decay_filter != "kernels":
        raise ValueError(
            f"decay_mask: decay_filter must be 'kernels' or 'all', got {decay_filter!r}"
        )
    # Any normalisation layer (relujax.models has its own PyTorch-semantics BatchNorm) too.
    excluded = [
        path
        for path, node in nnx.iter_graph(model)
        if isinstance(node, _NO_DECAY_MODULES)
        or (isinstance(node, nnx.Module) and "Norm" in type(node).__name__)
    ]

    def decayed(path: tuple, leaf: jax.Array) -> bool:
        under = any(path[: len(p)] == p for p in excluded)
        return leaf.ndim >= 2 and not under

    flat = {path: decayed(path, var[...]) for path, var in nnx.to_flat_state(params)}
    return nnx.map_state(lambda path, var: var.replace(flat[path]), params)


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step.

    `constant`, `cosine` (to 0 at the last step) or `step` (divided by 10 at each fraction of
    the run in `config.decay_at`, He et al.'s 0.5 and 0.75 by default), each after a linear
    warm-up from 0 over `config.warmup_epochs`.
    """
    total = int(config.epochs * steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    lr = config.lr
    if config.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total - warmup, 1))
    else:
        bounds = {int(round(f * total)) - warmup: 0.1 for f in config.decay_at}
        main = optax.piecewise_constant_schedule(lr, {b: s for b, s in bounds.items() if b > 0})
    if warmup == 0:
        return main
    ramp = optax.linear_schedule(0.0, lr, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(
    config: TrainConfig, model: nnx.Module, params: nnx.State, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The Optax transformation and its schedule for `config`.

    `sgd` is plain SGD (PyTorch `SGD(lr)`), `momentum` is heavy-ball SGD (`config.momentum`,
    optionally Nesterov), `adam` and `adamw` are Optax's. Weight decay is coupled (added to the
    gradient, as PyTorch's `weight_decay=`) for sgd/momentum/adam and decoupled for adamw.

    Example:
        >>> from flax import nnx
        >>> from relujax.training import TrainConfig, make_optimizer
        >>> m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> _, params = nnx.split(m, nnx.Param)
        >>> tx, lr = make_optimizer(TrainConfig(lr=0.1), m, params, steps_per_epoch=10)
        >>> float(lr(0))
        0.1
    """
    schedule = make_schedule(config, steps_per_epoch)
    wd = config.weight_decay
    mask = decay_mask(model, params, decay_filter=config.decay_filter) if wd > 0 else None
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=wd, mask=mask), schedule
    if config.optimizer == "sgd":
        base = optax.sgd(schedule)
    elif config.optimizer == "momentum":
        base = optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)
    else:
        base = optax.adam(schedule)
    if wd > 0:
        base = optax.chain(optax.add_decayed_weights(wd, mask=mask), base)
    return base, schedule
