"""Building a run: the model, its state split for the steps, the optimizer, the data on device,
the jitted steps. :func:`prepare_run` does all of it, as `relujax.training.train` and the
benchmarks build the application's training step."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from relujax._src.data.pipeline import epoch_indices, get_batch, put_on_device
from relujax._src.data.sharding import (
    batch_sharding,
    data_mesh,
    put,
    replicated_sharding,
    table_sharding,
)
from relujax._src.training.config import ConfigError, TrainConfig
from relujax._src.training.guards import check_labels
from relujax._src.training.optim import make_optimizer
from relujax._src.training.steps import StepFns, make_steps, zero_metrics

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: TrainConfig, num_classes: int) -> nnx.Module:
    """`relujax.models.create_model` for `config` (ConfigError for an unknown name or argument)."""
    from relujax import models

    names = sorted(models.MODELS)
    if config.model.lower() not in models.MODELS:
        raise ConfigError(f"--model: unknown model {config.model!r}; expected one of {names}")
    kwargs = dict(config.model_kwargs)
    if config.activation is not None:
        kwargs["activation"] = config.activation
    if config.dtype != "float32":
        kwargs["dtype"] = DTYPES[config.dtype]
    try:
        model = models.create_model(
            config.model.lower(), rngs=nnx.Rngs(config.seed), num_classes=num_classes, **kwargs
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--model {config.model}: {e}") from e
    return model


@dataclasses.dataclass
class RunState:
    """Everything a step reads or writes, on device: the checkpointed part of a run."""

    params: nnx.State
    rest: nnx.State
    opt_state: Any
    metrics: dict[str, jax.Array]

    def tree(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "rest": self.rest,
            "opt_state": self.opt_state,
            "metrics": self.metrics,
        }

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> RunState:
        return cls(tree["params"], tree["rest"], tree["opt_state"], tree["metrics"])


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.GraphDef, nnx.State, nnx.State]:
    """(train graphdef, eval graphdef, params, rest); leaves the model in training mode."""
    model.eval()
    eval_gd, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    train_gd, params, rest = nnx.split(model, nnx.Param, ...)
    return train_gd, eval_gd, params, rest


@dataclasses.dataclass
class DeviceData:
    """The dataset's arrays on device (replicated), and its normalisation constants."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    mean: jax.Array
    std: jax.Array


def data_on_device(ds: Any, mesh: jax.sharding.Mesh) -> DeviceData:
    return DeviceData(
        *put_on_device(ds, replicated_sharding(mesh)),
        jnp.asarray(ds.mean, jnp.float32),
        jnp.asarray(ds.std, jnp.float32),
    )


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def check_batching(config: TrainConfig, ds: Any, n_devices: int) -> None:
    """ConfigError when the batch sizes do not fit the devices or the dataset."""
    eval_bs = config.eval_batch_size or config.batch_size
    for flag, bs in (("--batch-size", config.batch_size), ("--eval-batch-size", eval_bs)):
        if bs % n_devices:
            raise ConfigError(
                f"{flag}: {bs} does not split over {n_devices} devices; use a multiple of "
                f"{n_devices}"
            )
    if ds.n_train == 0 or ds.n_test == 0:
        raise ConfigError(f"--dataset {config.dataset}: needs training and test images")


@dataclasses.dataclass
class PreparedRun:
    """A training run built and on device, ready for its first step: what `prepare_run` returns.

    `state` (parameters, other model state, optimizer state, metric sums) is replicated over
    `mesh`; `steps.train(*state.tree().values(), *train_args(idx, mask), number(step),
    number(epoch))` is one step (see `prepare_run`'s example). `train_graphdef` and
    `eval_graphdef` are the model's graph in training and in eval mode.
    """

    config: TrainConfig
    dataset: Any
    mesh: jax.sharding.Mesh
    train_graphdef: nnx.GraphDef
    eval_graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps_per_epoch: int
    state: RunState
    data: DeviceData
    steps: StepFns

    def epoch_table(self, epoch: int) -> tuple[jax.Array, jax.Array]:
        """The `(steps_per_epoch, batch_size)` batch indices and row mask of training epoch
        `epoch` (`relujax.data.epoch_indices`), on device."""
        c = self.config
        idx, mask = epoch_indices(
            self.dataset.n_train, c.batch_size, seed=c.seed, epoch=epoch, shuffle=c.shuffle
        )
        sh = table_sharding(self.mesh)
        return put(np.asarray(idx, np.int32), sh), put(np.asarray(mask, bool), sh)

    def number(self, i: int) -> jax.Array:
        """A step (or epoch) number as the steps take it: an int32 replicated over `mesh`."""
        return put(np.int32(i), replicated_sharding(self.mesh))

    def train_args(self, idx: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
        """The arguments of `steps.train` after the state, up to the step and epoch numbers."""
        return (self.data.x_train, self.data.y_train, idx, mask)


def prepare_run(
    config: TrainConfig,
    dataset: Any,
    *,
    model_fn: Callable[[TrainConfig, int], nnx.Module] | None = None,
) -> PreparedRun:
    """Builds the run `config` on `dataset` as `relujax.training.train` does, up to its first step.

    Checks the labels and the batch sizes (ConfigError), builds the model (`model_fn(config,
    num_classes)`, default `relujax.models.create_model` with `config`'s model, activation,
    model_kwargs, dtype and seed), the optimizer and its schedule (`make_optimizer`), puts the
    state and the dataset on the devices of `relujax.data.data_mesh()` and makes the jitted
    steps (`make_steps`, with the speed policy's compile options).

    Example:
        >>> from relujax.data import load_dataset
        >>> from relujax.training import TrainConfig, prepare_run
        >>> cfg = TrainConfig(model="netdepth", batch_size=8, optimizer="sgd")
        >>> run = prepare_run(cfg, load_dataset("synthetic", n_train=16, n_test=8))
        >>> idx, mask = run.epoch_table(0)
        >>> step, epoch = run.number(0), run.number(0)
        >>> state = run.steps.train(*run.state.tree().values(), *run.train_args(idx, mask),
        ...                         step, epoch)
        >>> int(state[3]["count"])  # images seen
        8
    """
    ds = dataset
    check_labels(ds)
    mesh = data_mesh()
    check_batching(config, ds, mesh.size)
    model = (model_fn or build_model)(config, ds.num_classes)
    train_gd, eval_gd, params, rest = split_model(model)
    nb = steps_per_epoch(ds.n_train, config.batch_size)
    tx, schedule = make_optimizer(config, model, params, nb)
    rep = replicated_sharding(mesh)
    state = RunState(params, rest, tx.init(params), zero_metrics())
    state = RunState.from_tree(jax.tree.map(lambda x: put(x, rep), state.tree()))
    data = data_on_device(ds, mesh)
    steps = make_steps(
        train_gd,
        eval_gd,
        tx,
        get_batch=get_batch,
        mean=data.mean,
        std=data.std,
        dtype=DTYPES[config.dtype],
        augment=config.augment,
        seed=config.seed,
        l2=config.l2,
        eval_train_mode=config.eval_train_mode,
        batch_sharding=batch_sharding(mesh),
    )
    return PreparedRun(config, ds, mesh, train_gd, eval_gd, tx, schedule, nb, state, data, steps)
