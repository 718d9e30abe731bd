"""Building a run: the model, its state split for the steps, the data on device, the probe."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from relujax._src.data.pipeline import put_on_device
from relujax._src.data.sharding import put, replicated_sharding, to_host
from relujax._src.training.config import ConfigError, TrainConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PROBE_IMAGES = 512


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


class DeadUnitProbe:
    """Fraction of dead units per activation layer, measured on a fixed batch of training images.

    Uses `relujax.models.set_monitor` / `dead_unit_stats` on a copy of the model (the trained
    model itself runs unmonitored, so this costs one forward pass per epoch). Empty for models
    without monitored activation layers.
    """

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        get_batch: Callable[..., Any],
        data: DeviceData,
        dtype: Any,
        sharding: jax.sharding.Sharding,
    ) -> None:
        self.graphdef = graphdef
        n = min(PROBE_IMAGES, int(data.x_train.shape[0]))
        self.sharding = sharding
        self.idx = put(np.arange(n, dtype=np.int32), sharding)
        self.data = data
        from relujax.models import dead_unit_stats, set_monitor

        self._set_monitor = set_monitor

        def probe(gd, params, rest, x, y, idx):
            xb, _ = get_batch(
                x, y, idx, mean=data.mean, std=data.std, dtype=dtype, augment_key=None
            )
            model = nnx.merge(gd, params, rest, copy=True)
            model(xb)
            return dead_unit_stats(model)

        self._probe = jax.jit(probe, static_argnums=0)

    def __call__(self, params: nnx.State, rest: nnx.State) -> dict[str, dict[str, float]]:
        model = nnx.merge(self.graphdef, params, rest)
        self._set_monitor(model, True)
        gd, p, r = nnx.split(model, nnx.Param, ...)
        r = jax.tree.map(lambda x: put(x, self.sharding), r)  # the new stats live on one device
        d = self.data
        stats = self._probe(gd, p, r, d.x_train, d.y_train, self.idx)
        stats = jax.tree.map(to_host, stats)
        return {
            layer: {k: round(float(v), 6) for k, v in values.items()}
            for layer, values in stats.items()
        }
