"""Data parallelism: one `data` mesh axis over every device, parameters replicated.

The same code runs on one device, on several local devices and on several processes (after
`jax.distributed.initialize()`): arrays are built with `jax.make_array_from_callback` from host
data that every process holds in full, so no process needs to know which shards are its own.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over `devices` (default: all devices of all processes).

    Example:
        >>> from relujax.training import make_mesh
        >>> make_mesh().axis_names
        ('data',)
    """
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, the dataset)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split over the `data` axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def table_sharded(mesh: Mesh) -> NamedSharding:
    """A `(num_batches, batch_size)` index table with each batch split over `data`."""
    return NamedSharding(mesh, PartitionSpec(None, "data"))


def put(x: Any, sharding: jax.sharding.Sharding) -> Any:
    """Places host data `x` (a pytree, the same on every process) on devices with `sharding`."""
    return jax.tree.map(lambda leaf: _put_leaf(leaf, sharding), x)


def _put_leaf(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _put_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(x: Any) -> Any:
    """A replicated (or fully addressable) array as numpy, valid on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` when the environment describes a multi-process job.

    Recognised: `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (or the
    cluster environments JAX detects itself, e.g. SLURM, when `RELUJAX_DISTRIBUTED=1`).
    Returns whether it initialised.
    """
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if addr and "JAX_NUM_PROCESSES" in os.environ:
        jax.distributed.initialize(
            coordinator_address=addr,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return True
    if os.environ.get("RELUJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False
