"""The dead-unit probe: the fraction of dead units per activation layer, once per epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from relujax._src.data.sharding import put, to_host
from relujax._src.training.build import DeviceData

PROBE_IMAGES = 512


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
