"""Deliberate dtype promotion, written out so that it also holds under strict promotion.

Where the library combines dtypes on purpose (a bf16 input meeting f32 parameters, statistics
accumulated in float32 or wider), it asks for JAX's standard promotion explicitly. Everywhere
else it casts, so a user who runs with `jax_numpy_dtype_promotion="strict"` sees no error from
relujax and the same results as under the default ("standard") promotion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike


def promote(*dtypes: DTypeLike) -> np.dtype:
    """JAX's standard promotion of `dtypes` (`promote(jnp.bfloat16, jnp.float32)` is float32),
    whatever `jax_numpy_dtype_promotion` is set to.
    """
    with jax.numpy_dtype_promotion("standard"):
        return np.dtype(jnp.result_type(*dtypes))
