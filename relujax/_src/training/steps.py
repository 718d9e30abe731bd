"""The jit-compiled train and eval steps: the one place where a batch meets the model.

A step is a pure function of device arrays: the model's parameters and other state (BatchNorm
statistics, RNG counters) as `nnx.State`, the optimizer state, running metric sums, the whole
dataset (already on device), the epoch's batch index table and the step number. The host only
dispatches it, so steps queue up asynchronously and the loop reads metrics at logging points.

Every batch has the same shape: the last partial batch is padded and `mask` marks its real
rows, so nothing recompiles; losses and accuracies are masked means. A model whose `__call__`
takes a `mask` keyword gets the row mask too (for BatchNorm statistics over real rows only);
otherwise a BatchNorm layer in training mode also sees the padded rows of that one batch.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from relujax._src import policy

Metrics = dict[str, jax.Array]


def zero_metrics() -> Metrics:
    """Fresh running sums for `train_step`/`eval_step` (float32/int32 whatever x64 says)."""
    return {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "count": jnp.zeros((), jnp.int32),
        "finite": jnp.ones((), jnp.bool_),
    }


def l2_penalty(params: nnx.State) -> jax.Array:
    """sum(p**2) over every parameter, in float32 (the book's `l2_norm`)."""
    leaves = jax.tree.leaves(params)
    return sum((jnp.sum(jnp.square(p.astype(jnp.float32))) for p in leaves), jnp.float32(0))


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
    """Masked mean cross-entropy (float32), the per-row losses and the number of correct rows."""
    logits = logits.astype(jnp.float32)
    per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    m = mask.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m), 1.0)
    loss = jnp.sum(per_row * m) / n
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & mask, dtype=jnp.int32)
    return loss, per_row, correct


def apply_model(model: nnx.Module, x: jax.Array, mask: jax.Array) -> jax.Array:
    """`model(x, mask=mask)` when the model takes a row mask, else `model(x)`."""
    try:
        takes_mask = "mask" in inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        takes_mask = False
    return model(x, mask=mask) if takes_mask else model(x)


@dataclasses.dataclass(frozen=True)
class StepFns:
    """The two jitted step functions of a run (the loop compiles them ahead of time with `.lower`).

    train(params, rest, opt_state, metrics, x, y, idx, mask, step, epoch)
        -> (params, rest, opt_state, metrics)
    evaluate(params, rest, metrics, x, y, idx, mask, step) -> (rest, metrics)

    `idx`/`mask` are the epoch's `(num_batches, batch_size)` tables of `epoch_indices`; `step`
    selects the row. The first four arguments of train (two of evaluate) are donated.
    """

    train: Callable[..., Any]
    evaluate: Callable[..., Any]


def make_steps(
    train_graphdef: nnx.GraphDef,
    eval_graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    get_batch: Callable[..., tuple[jax.Array, jax.Array]],
    mean: jax.Array,
    std: jax.Array,
    dtype: Any = jnp.float32,
    augment: bool = False,
    seed: int = 0,
    l2: float = 0.0,
    eval_train_mode: bool = False,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> StepFns:
    """Builds the jitted train and eval steps of a run.

    `train_graphdef`/`eval_graphdef` are the model's graph after `model.train()` and
    `model.eval()`. With `eval_train_mode` (the book's quirk) evaluation runs the train graph:
    batch statistics, dropout on, and BatchNorm running statistics updated as PyTorch does under
    `no_grad`. `l2 > 0` adds `l2 * sum(p**2)` to the loss. With `augment`, the batch of step `s`
    of epoch `e` is augmented with the key `fold_in(fold_in(key(seed), e), s)`, so a resumed run
    sees the same crops and flips. `batch_sharding` (for several devices) shards the batch.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, optax
        >>> from flax import nnx
        >>> from relujax.training import make_steps, zero_metrics
        >>> m = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
        >>> gd, params, rest = nnx.split(m, nnx.Param, ...)
        >>> def get_batch(x, y, idx, *, mean, std, dtype, augment_key):
        ...     return ((x[idx] - mean) / std).astype(dtype), y[idx]
        >>> tx = optax.sgd(0.1)
        >>> steps = make_steps(gd, gd, tx, get_batch=get_batch, mean=jnp.zeros(4), std=jnp.ones(4))
        >>> x, y = jnp.ones((6, 4)), jnp.array([0, 1, 0, 1, 0, 1], jnp.int32)
        >>> idx, mask = jnp.arange(6).reshape(2, 3), jnp.ones((2, 3), bool)
        >>> out = steps.train(params, rest, tx.init(params), zero_metrics(), x, y, idx, mask,
        ...                   jnp.int32(0), jnp.int32(0))
        >>> int(out[3]["count"])
        3
    """
    base_key = jax.random.key(seed)

    def batch(x, y, idx, mask, step, epoch, *, train: bool):
        idx_row, mask_row = idx[step], mask[step]
        key = None
        if train and augment:
            key = jax.random.fold_in(jax.random.fold_in(base_key, epoch), step)
        xb, yb = get_batch(x, y, idx_row, mean=mean, std=std, dtype=dtype, augment_key=key)
        if batch_sharding is not None:
            xb, yb, mask_row = jax.lax.with_sharding_constraint((xb, yb, mask_row), batch_sharding)
        return xb, yb, mask_row

    def loss_fn(params, rest, xb, yb, mask_row):
        model = nnx.merge(train_graphdef, params, rest, copy=True)
        loss, _, correct = cross_entropy(apply_model(model, xb, mask_row), yb, mask_row)
        if l2 > 0:
            loss = loss + jnp.float32(l2) * l2_penalty(params)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, (correct, new_rest)

    def accumulate(metrics, loss, correct, mask_row):
        count = jnp.sum(mask_row, dtype=jnp.int32)
        return {
            "loss_sum": metrics["loss_sum"] + loss * count.astype(jnp.float32),
            "correct": metrics["correct"] + correct,
            "count": metrics["count"] + count,
            "finite": metrics["finite"] & jnp.isfinite(loss),
        }

    def train(params, rest, opt_state, metrics, x, y, idx, mask, step, epoch):
        xb, yb, mask_row = batch(x, y, idx, mask, step, epoch, train=True)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (correct, rest)), grads = grad_fn(params, rest, xb, yb, mask_row)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, rest, opt_state, accumulate(metrics, loss, correct, mask_row)

    def evaluate(params, rest, metrics, x, y, idx, mask, step):
        xb, yb, mask_row = batch(x, y, idx, mask, step, None, train=False)
        graphdef = train_graphdef if eval_train_mode else eval_graphdef
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss, _, correct = cross_entropy(apply_model(model, xb, mask_row), yb, mask_row)
        if eval_train_mode:  # BatchNorm running stats and dropout RNG advance, as in PyTorch
            _, _, rest = nnx.split(model, nnx.Param, ...)
        return rest, accumulate(metrics, loss, correct, mask_row)

    # Per-backend XLA options, chosen by the speed policy (relujax._src.policy.compiler_options;
    # the step times behind the choice are in benchmarks/RESULTS.md).
    opts = policy.compiler_options()
    return StepFns(
        train=jax.jit(train, donate_argnums=(0, 1, 2, 3), compiler_options=opts),
        evaluate=jax.jit(evaluate, donate_argnums=(1, 2), compiler_options=opts),
    )
