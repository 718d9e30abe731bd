"""What the backward pass keeps: residual bytes per element, relujax vs jax.nn.

Measured as the bytes of `jax.tree.leaves(vjp_fn)` from `jax.vjp` (`residual_bytes`). Limits
per element with default arguments: 1 byte for the piecewise-linear functions (a mask), the
input's itemsize for the smooth ones. Scalars kept alongside (a slope, a key) are allowed as a
constant few bytes, independent of the size of x.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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


PIECEWISE = [s for s in relujax.ACTIVATIONS.values() if s.piecewise_linear]


@pytest.mark.parametrize("s", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spec", PIECEWISE, ids=lambda s: s.name)
def test_bits_residual_is_one_bit_per_element_with_equal_gradients(spec, s):
    """residual="bits": 1 bit per element (2 bits for 0 < s < 1), gradients bit-identical."""
    x = jax.random.normal(jax.random.key(0), (3, 37, 5), jnp.float32) * 8  # n % 8 != 0
    x = x.at[0, 0].set(0.0).at[1, 1].set(6.0)  # kinks
    kw = {**spec.default_kwargs, "subgradient": s}
    bits_per_element = 1 if s in (0.0, 1.0) else 2
    measured = residual_bytes(spec.fn, x, **kw, residual="bits")
    assert measured <= bits_per_element / 8 + (1 + CONSTANT_BYTES) / x.size
    if spec.name == "rrelu":
        kw["key"] = jax.random.key(1)  # training mode: slopes drawn from the key

    def grads(residual):
        def f(x):
            return spec.fn(x, **kw, residual=residual)

        return (
            jax.grad(lambda x: jnp.sum(f(x) * x))(x),
            jax.jvp(f, (x,), (x,))[1],
            jax.vmap(jax.grad(lambda r: jnp.sum(f(r) ** 2)))(x),
        )

    mask, bits = jax.jit(lambda x: (grads("mask"), grads("bits")))(x)
    for m, b in zip(mask, bits, strict=True):
        np.testing.assert_array_equal(b, m)


def test_bits_residual_in_bfloat16_and_bad_mode():
    x = jnp.linspace(-2.0, 2.0, 99, dtype=jnp.bfloat16)
    g = jax.grad(lambda x: jnp.sum(relujax.relu(x, residual="bits").astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(g, (x > 0).astype(jnp.bfloat16))
    with pytest.raises(
        ValueError, match=r"relujax\.prelu: expected residual .*'mask'.*'bits'.*'1bit'"
    ):
        relujax.prelu(x, 0.25, residual="1bit")
