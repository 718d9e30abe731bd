"""Data parallelism: one ``data`` mesh axis over every device, parameters and dataset replicated.

The one place that builds meshes and shardings and places host data on devices, for the input
pipeline (`put_on_device`, `get_batch`) and the training loop alike. The same code runs on one
device, on several local devices and on several processes (after ``jax.distributed.initialize()``,
see `maybe_initialize_distributed`): arrays are built with ``jax.make_array_from_callback`` from
host data that every process holds in full, so no process needs to know which shards are its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices, every host).

    Example:
      >>> from relujax.data import data_mesh
      >>> data_mesh().axis_names
      ('data',)
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: devices is empty; pass at least one jax.Device")
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def _check_mesh(fn: str, mesh: Mesh) -> Mesh:
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"{fn}: the mesh needs a {DATA_AXIS!r} axis (see data_mesh), got axes {mesh.axis_names}"
        )
    return mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits a batch's leading axis over the mesh's ``"data"`` axis (batch size must divide).

    Example:
      >>> from jax.sharding import PartitionSpec
      >>> from relujax.data import batch_sharding, data_mesh
      >>> batch_sharding(data_mesh()).spec == PartitionSpec("data")
      True
    """
    return NamedSharding(_check_mesh("batch_sharding", mesh), PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh`` (for the dataset and the model parameters).

    Example:
      >>> from jax.sharding import PartitionSpec
      >>> from relujax.data import data_mesh, replicated_sharding
      >>> replicated_sharding(data_mesh()).spec == PartitionSpec()
      True
    """
    return NamedSharding(mesh, PartitionSpec())


def table_sharding(mesh: Mesh) -> NamedSharding:
    """A ``(num_batches, batch_size)`` index table (`epoch_indices`) with each batch split."""
    return NamedSharding(_check_mesh("table_sharding", mesh), PartitionSpec(None, DATA_AXIS))


def put(x: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """Places host data ``x`` (a pytree, the same on every process) on devices with ``sharding``.

    ``None`` is the default device (single process only).
    """
    return jax.tree.map(lambda leaf: _put_leaf(leaf, sharding), x)


def _put_leaf(x: Any, sharding: jax.sharding.Sharding | None) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1 or sharding is None:
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
    """Calls ``jax.distributed.initialize()`` when the environment describes a multi-process job.

    Recognised: ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (or
    the cluster environments JAX detects itself, e.g. SLURM, when ``RELUJAX_DISTRIBUTED=1``).
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
