"""Argument checks shared by the activations: clear errors at trace time, dtype rules.

Every public activation calls these before any arithmetic, so a bad argument fails with a
message that names the function, the argument, what was expected and what came, and the fix.
Checks only look at what is known when tracing (dtypes, shapes, Python numbers); traced values
pass through unchecked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

_FLOAT_NAMES = "float16, bfloat16, float32 or float64"


def floating_input(fn: str, x: ArrayLike) -> jax.Array:
    """Returns `x` as a JAX array, or raises TypeError if it is not a real floating array."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        if isinstance(x, bool) or not isinstance(x, (int, float, np.generic, list, tuple)):
            raise TypeError(
                f"relujax.{fn}: expected x to be a floating array ({_FLOAT_NAMES}), "
                f"got {type(x).__name__}; pass e.g. jnp.asarray(x, jnp.float32)."
            )
        x = jnp.asarray(x)
    else:
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"relujax.{fn}: expected x to be a floating array ({_FLOAT_NAMES}), got dtype "
            f"{x.dtype}; convert it first, e.g. x.astype(jnp.float32)."
        )
    return x


def concrete_float(value: object) -> float | None:
    """The Python float of a concrete scalar, or None when `value` is traced."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def hyperparameter(
    fn: str, name: str, value: ArrayLike, x: jax.Array, *, channels: bool = False
) -> jax.Array:
    """Converts a hyperparameter to an array that never promotes `x`.

    Python numbers and integer arrays become `x.dtype`. Floating arrays keep their own dtype
    (e.g. an f32 parameter next to a bf16 input) so that their gradient is accumulated in that
    dtype; the activations cast them to `x.dtype` before use, so the output is always `x.dtype`.
    A hyperparameter must be a scalar; with `channels=True` it may also have shape `(C,)` or
    `(1,)`, broadcast over the last axis of `x`.
    """
    dtype = getattr(value, "dtype", None)
    if isinstance(value, bool) or (dtype is None and not isinstance(value, (int, float))):
        raise TypeError(
            f"relujax.{fn}: expected {name} to be a real number or floating array, "
            f"got {type(value).__name__}."
        )
    if dtype is not None and not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        raise TypeError(
            f"relujax.{fn}: expected {name} to have a real floating dtype, got {dtype}; "
            f"convert it first, e.g. {name}.astype(jnp.float32)."
        )
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        arr = jnp.asarray(value)
    else:
        arr = jnp.asarray(value, dtype=x.dtype)
    shape = arr.shape
    if channels:
        num_channels = x.shape[-1] if x.ndim else None
        if not (shape == () or shape == (1,) or (arr.ndim == 1 and shape[0] == num_channels)):
            raise ValueError(
                f"relujax.{fn}: expected {name} to be a scalar or have shape (C,) = "
                f"({num_channels},) matching the last (channel) axis of x (x.shape={x.shape}), "
                f"got {name}.shape={shape}; inputs are channels-last (NHWC)."
            )
    elif shape != ():
        raise ValueError(f"relujax.{fn}: expected {name} to be a scalar, got shape {shape}.")
    return arr


def subgradient(fn: str, value: ArrayLike) -> tuple[str, jax.Array | float]:
    """Validates `subgradient` and picks how the kink is stored for the backward pass.

    Returns `(mode, s)`: mode "open" (s == 0: only the open identity region has slope 1),
    "closed" (s == 1: the kink belongs to the identity side) or "code" (any other s, or a traced
    one: three regions stored as an int8 code). Concrete values must lie in [0, 1].
    """
    if isinstance(value, bool) or not (
        isinstance(value, (int, float, np.generic)) or hasattr(value, "dtype")
    ):
        raise TypeError(
            f"relujax.{fn}: expected subgradient to be a number in [0, 1], "
            f"got {type(value).__name__}."
        )
    if hasattr(value, "dtype") and not (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
    ):
        raise TypeError(
            f"relujax.{fn}: expected subgradient to be a real number in [0, 1], "
            f"got dtype {value.dtype}."
        )
    if jnp.shape(value) != ():
        raise ValueError(
            f"relujax.{fn}: expected subgradient to be a scalar in [0, 1], "
            f"got shape {jnp.shape(value)}."
        )
    s = concrete_float(value)
    if s is None:
        return "code", jnp.asarray(value)
    if not 0.0 <= s <= 1.0:
        raise ValueError(
            f"relujax.{fn}: expected subgradient in [0, 1] (the derivative at a kink is "
            f"(1 - s) * flat slope + s * identity slope), got {s}."
        )
    if s == 0.0:
        return "open", s
    if s == 1.0:
        return "closed", s
    return "code", s


def check_range(
    fn: str, name: str, value: ArrayLike, *, positive: bool = False, nonzero: bool = False
) -> None:
    """Raises ValueError when a concrete scalar hyperparameter is nan or out of its range."""
    if jnp.shape(value) != ():
        return
    v = concrete_float(value)
    if v is None:
        return
    if np.isnan(v) or (positive and not v > 0) or (nonzero and v == 0.0):
        expected = "a number"
        if positive:
            expected = "a positive number"
        elif nonzero:
            expected = "a nonzero number"
        raise ValueError(f"relujax.{fn}: expected {name} to be {expected}, got {v}.")
