"""Packed region masks: the 1-bit residual mode of the piecewise-linear activations.

A piecewise-linear function's derivative is known from which region each element is in
(Novikov et al., "Few-bit backward", arXiv 2202.00441). The default keeps that as one byte per
element (a bool mask or an int8 code); `residual="bits"` packs it into bits, eight elements per
byte: 1 bit per element for a two-region mask (subgradient 0 or 1), 2 bits for the
three-region code (any other subgradient).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

RESIDUAL_MODES = ("mask", "bits")


def check_residual(fn: str, residual: object) -> str:
    """Validates the `residual=` keyword of a piecewise-linear activation."""
    if not isinstance(residual, str) or residual not in RESIDUAL_MODES:
        raise ValueError(
            f"relujax.{fn}: expected residual to be 'mask' (1 byte per element) or 'bits' "
            f"(1 bit per element, 2 for a subgradient other than 0 and 1), got {residual!r}."
        )
    return residual


def pack(region: jax.Array) -> jax.Array:
    """A bool mask -> uint8 `(ceil(n / 8),)`; an int8 code -> uint8 `(2, ceil(n / 8))`."""
    if region.dtype == jnp.bool_:
        return jnp.packbits(region.ravel(), bitorder="little")
    planes = (region.ravel() == 2, region.ravel() == 1)  # identity side, kink
    return jnp.stack([jnp.packbits(p, bitorder="little") for p in planes])


def unpack(packed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of `pack` for an array of `shape`."""
    n = math.prod(shape)

    def plane(p):
        return jnp.unpackbits(p, count=n, bitorder="little").reshape(shape)

    if packed.ndim == 1:
        return plane(packed).astype(jnp.bool_)
    return (plane(packed[0]) * 2 + plane(packed[1])).astype(jnp.int8)
