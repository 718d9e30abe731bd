"""Building blocks of the custom_jvp rules: compute dtypes and lean linear maps.

Reverse mode transposes the tangent half of a JVP rule, and `jax.vjp` keeps every value that
half reads from the primal computation. Two things make that more than needed: constants that
the tangent half builds (`jnp.where(mask, g, 0)` broadcasts a zero array, which becomes a
residual as large as `x`), and casts computed from primal values (a bool mask cast to float is
kept as floats). `linear` wraps the tangent half in `jax.checkpoint`, so exactly its
arguments are kept (a bool mask, an int8 code, a derivative in `x.dtype`, scalars) and any
constant or cast inside is recomputed in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from relujax._src.dtypes import promote

F = TypeVar("F", bound=Callable)


def linear(fn: F) -> F:
    """Marks `fn` (linear in its last argument, the tangent) as recomputed in backward."""
    return jax.checkpoint(fn, prevent_cse=False)  # type: ignore[return-value]


def compute_dtype(dtype: jnp.dtype) -> np.dtype:
    """float16/bfloat16 are computed in float32 (like PyTorch's opmath); others as they are."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def meet_dtype(x_dtype: jnp.dtype, p_dtype: jnp.dtype) -> np.dtype:
    """Where `x_dtype` values meet a hyperparameter of `p_dtype`: float32 or wider, and at least
    `p_dtype` (an f32 slope times a bf16 `x` is computed in f32, even under strict promotion).
    """
    return promote(compute_dtype(x_dtype), p_dtype)


def is_zero(t: object) -> bool:
    """True for the symbolic zero tangent of an input that is not differentiated."""
    return isinstance(t, SymbolicZero)


def add_tangents(*terms: jax.Array | None) -> jax.Array:
    """Sums the tangent contributions that are present (None: the input was not perturbed)."""
    present = [t for t in terms if t is not None]
    out = present[0]
    for t in present[1:]:
        out = out + t
    return out


@linear
def scale(d: jax.Array, g: jax.Array) -> jax.Array:
    """`d * g` in `g.dtype`; `d` is a derivative already in `g.dtype` or broadcastable to it."""
    return (d * g).astype(g.dtype)


@linear
def scale_param(dy_dp: jax.Array, t: jax.Array) -> jax.Array:
    """Tangent of a hyperparameter: `dy_dp * t`, multiplied in float32 or wider.

    `dy_dp` has the shape and dtype of `x`; `t` is the hyperparameter's tangent (a scalar or a
    per-channel `(C,)` vector in the parameter's own dtype). The transpose sums the cotangent
    over the broadcast axes in that wider dtype, so a bf16 input does not lose the gradient of
    an f32 parameter to bf16 accumulation.
    """
    cd = meet_dtype(dy_dp.dtype, t.dtype)
    return (dy_dp.astype(cd) * t.astype(cd)).astype(dy_dp.dtype)
