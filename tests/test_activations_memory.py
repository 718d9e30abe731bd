"""What the backward pass keeps: residual bytes per element, relujax vs jax.nn.

Measured as the bytes of `jax.tree.leaves(vjp_fn)` from `jax.vjp` (`residual_bytes`). Limits
per element with default arguments: 1 byte for the piecewise-linear functions (a mask), the
input's itemsize for the smooth ones. Scalars kept alongside (a slope, a key) are allowed as a
constant few bytes, independent of the size of x.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from test_activations_values import CASES

import relujax
from relujax._src.activations import residual_bytes

N = 1 << 14
CONSTANT_BYTES = 64  # scalars and keys, whatever the size of x


def grid(dtype=jnp.float32):
    return jnp.linspace(-8.0, 8.0, N, dtype=dtype)  # includes 0 and both sides of every kink


def limit(spec, dtype):
    per_element = 1 if spec.piecewise_linear else jnp.dtype(dtype).itemsize
    return per_element + CONSTANT_BYTES / N


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("spec,kwargs", CASES)
def test_residual_bytes_per_element(spec, kwargs, dtype):
    measured = residual_bytes(spec.fn, grid(dtype), **kwargs)
    assert measured <= limit(spec, dtype), f"{spec.name}{kwargs}: {measured} bytes/element"


@pytest.mark.parametrize("spec", [s for s in relujax.ACTIVATIONS.values() if s.jax_nn])
def test_never_more_than_jax_nn(spec):
    x = grid()
    ours = residual_bytes(spec.fn, x, **spec.default_kwargs)
    theirs = residual_bytes(spec.jax_nn, x, **spec.default_kwargs)
    assert ours <= theirs + CONSTANT_BYTES / N, (spec.name, ours, theirs)


@pytest.mark.parametrize("s", [0.0, 0.3, 1.0])
@pytest.mark.parametrize(
    "spec", [s for s in relujax.ACTIVATIONS.values() if s.piecewise_linear], ids=lambda s: s.name
)
def test_one_byte_for_every_subgradient_even_traced(spec, s):
    x = grid()
    kw = spec.default_kwargs
    assert residual_bytes(spec.fn, x, **kw, subgradient=s) <= limit(spec, x.dtype)
    traced = jax.jit(lambda x, s: residual_bytes(spec.fn, x, **kw, subgradient=s))
    # residual_bytes inside jit counts the traced residuals' shapes and dtypes just the same.
    assert traced(x, jnp.float32(s)) <= limit(spec, x.dtype)


def test_rrelu_with_key_regenerates_slopes_instead_of_keeping_them():
    x = grid()
    assert residual_bytes(relujax.rrelu, x, jax.random.key(0)) <= 1 + CONSTANT_BYTES / N


def test_prelu_per_channel_alpha_keeps_mask_and_alpha_only():
    x = grid().reshape(-1, 16)
    alpha = jnp.full((16,), 0.25, jnp.float32)
    assert residual_bytes(relujax.prelu, x, alpha) <= 1 + (16 * 4 + CONSTANT_BYTES) / N


def test_residual_bytes_counts_what_is_kept():
    """The helper itself: sin keeps cos(x) (4 bytes/element in f32), a constant keeps nothing."""
    x = grid()
    assert residual_bytes(jnp.sin, x) == 4.0
    assert residual_bytes(lambda x: x + 1.0, x) == 0.0
    assert residual_bytes(jax.nn.relu, x) >= 1.0
    with pytest.raises(ValueError, match="residual_bytes: expected a non-empty x"):
        residual_bytes(jnp.sin, jnp.zeros((0,)))
