"""What the backward pass keeps: residual bytes per input element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def residual_bytes(fn: Callable[..., Any], x: jax.Array, *args: Any, **kwargs: Any) -> float:
    """Bytes kept by `jax.vjp(lambda x: fn(x, *args, **kwargs), x)` per element of `x`.

    Counts the leaves of the returned `vjp_fn` (its residuals), as the design measures memory.
    Only `x` is differentiated; `args` and `kwargs` are held fixed.

    Example:
      >>> import jax, jax.numpy as jnp, relujax
      >>> from relujax._src.activations import residual_bytes
      >>> x = jnp.linspace(-1.0, 1.0, 1000)
      >>> residual_bytes(relujax.relu, x), residual_bytes(jax.nn.relu, x)
      (1.0, 5.0)
    """
    x = jax.numpy.asarray(x)
    if x.size == 0:
        raise ValueError(f"residual_bytes: expected a non-empty x, got shape {x.shape}.")
    _, vjp_fn = jax.vjp(lambda x: fn(x, *args, **kwargs), x)
    total = sum(np.dtype(leaf.dtype).itemsize * leaf.size for leaf in _array_leaves(vjp_fn))
    return total / x.size


def _array_leaves(tree: Any) -> list[Any]:
    leaves = []
    for leaf in jax.tree.leaves(tree):
        if hasattr(leaf, "dtype") and hasattr(leaf, "size"):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            leaves.append(leaf)
    return leaves
