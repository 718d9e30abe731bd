"""Values of every registered activation: float64 reference, dtypes, transformations.

Every test is parametrized over `relujax.ACTIVATIONS` (each spec's default keyword arguments
and its variants), so a new activation gets every check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import relujax
from relujax._src.activations import reference

DTYPES = [
    jnp.float16,
    jnp.bfloat16,
    jnp.float32,
    pytest.param(jnp.float64, marks=pytest.mark.x64),
]
# Relative tolerance per dtype: a few units in the last place of the result.
RTOL = {jnp.float16: 2e-3, jnp.bfloat16: 1.6e-2, jnp.float32: 4e-6, jnp.float64: 1e-13}

CASES = [
    pytest.param(spec, kwargs, id=f"{name}-{i}")
    for name, spec in relujax.ACTIVATIONS.items()
    for i, kwargs in enumerate(spec.cases())
]


def assert_matches(x, actual, expected, dtype, what, derivative=None):
    """`actual` (in `dtype`) equals the float64 reference rounded to `dtype`, up to a few ulps.

    The tolerance grows with the condition number |x f'(x) / f(x)| (from the reference
    derivative, when given): computing in float32 loses that much even with perfect ops.
    Results below the smallest normal may be flushed to zero. nan must match nan, inf inf.
    """
    info = jnp.finfo(dtype)
    a = np.asarray(actual).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.asarray(expected).astype(dtype).astype(np.float64)
        cond = np.ones_like(e)
        if derivative is not None:
            cond = 1.0 + np.nan_to_num(np.abs(x.astype(np.float64) * derivative / expected))
        ok = np.abs(a - e) <= RTOL[dtype] * cond * np.abs(e) + 2 * float(info.smallest_subnormal)
    ok |= (np.abs(e) <= float(info.tiny)) & (np.abs(a) <= float(info.tiny))
    ok |= (a == e) | (np.isnan(a) & np.isnan(e))
    bad = ~ok
    assert not bad.any(), (
        f"{what}: {bad.sum()} mismatches at x={x[bad][:8]}: got {a[bad][:8]}, expected {e[bad][:8]}"
    )


def derivative(f, x):
    """Elementwise derivative of an elementwise `f`: the VJP with a cotangent of ones."""
    y, vjp_fn = jax.vjp(f, x)
    return vjp_fn(jnp.ones_like(y))[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("spec,kwargs", CASES)
def test_value_and_derivatives_match_float64_reference(spec, kwargs, dtype):
    """On a grid through every kink, at +-inf (limits), nan, huge, tiny, -80 and -100.

    The value, the first derivative (never NaN for a finite input; the kink convention of the
    default subgradient) and, in float32/float64 away from kinks, the second derivative.
    """
    x = reference.grid(dtype, spec.kinks)
    f = lambda x: spec.fn(x, **kwargs)  # noqa: E731
    y, dy, d2y = jax.jit(
        lambda x: (f(x), derivative(f, x), derivative(lambda x: derivative(f, x), x))
    )(x)
    name = f"{spec.name}{kwargs} in {jnp.dtype(dtype).name}"
    assert y.dtype == dy.dtype == jnp.dtype(dtype) and y.shape == dy.shape == x.shape
    x64 = x.astype(np.float64)
    ref_y, ref_dy, ref_d2y = spec.reference(x64, **kwargs)
    assert_matches(x, y, ref_y, dtype, name, derivative=ref_dy)

    finite = np.isfinite(x64)
    assert np.all(np.isfinite(np.asarray(dy, np.float64)[finite])), f"non-finite {name}'"
    # CPUs may treat subnormal inputs as 0 (denormals-are-zero): then the kink rule applies.
    subnormal = (x64 != 0) & (np.abs(x64) < float(jnp.finfo(dtype).tiny))
    _, at_zero, _ = spec.reference(np.where(subnormal, np.copysign(0.0, x64), x64), **kwargs)
    at_zero = at_zero.astype(dtype).astype(np.float64)
    ref_dy = np.where(subnormal & (np.asarray(dy, np.float64) == at_zero), at_zero, ref_dy)
    keep = ~np.isnan(x64)  # the derivative at nan is not specified
    assert_matches(x[keep], dy[keep], ref_dy[keep], dtype, name + "'", derivative=ref_d2y[keep])

    if jnp.dtype(dtype).itemsize >= 4:
        keep = finite & ~subnormal
        for k in spec.kinks:
            keep &= np.abs(x64 - k) > 1e-3
        if spec.piecewise_linear:
            np.testing.assert_array_equal(np.asarray(d2y)[keep], 0.0)
        # f'' is the derivative of f' (autodiff through the rule), so its rounding error is
        # relative to |f'| as much as to |f''|; 1 + x^2 bounds the condition number here.
        cond = 1.0 + np.minimum(np.abs(x64[keep]), 1e3) ** 2
        scale = np.abs(ref_d2y[keep]) + np.abs(ref_dy[keep])
        err = np.abs(np.asarray(d2y, np.float64)[keep] - ref_d2y[keep])
        tol = 8 * RTOL[dtype] * cond * scale + 1e3 * float(jnp.finfo(dtype).tiny)
        assert np.all(err <= tol), (
            f"{name}'': x={x[keep][err > tol][:6]}, got {np.asarray(d2y)[keep][err > tol][:6]}, "
            f"expected {ref_d2y[keep][err > tol][:6]}"
        )


@pytest.mark.parametrize("spec,kwargs", CASES)
def test_eager_jit_vmap_agree(spec, kwargs):
    x = jax.random.normal(jax.random.key(0), (3, 5), jnp.float32) * 4
    eager = spec.fn(x, **kwargs)
    # Fusion may reorder float ops: equal to float32 round-off, not bitwise.
    np.testing.assert_allclose(jax.jit(lambda x: spec.fn(x, **kwargs))(x), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda r: spec.fn(r, **kwargs))(x), eager, rtol=1e-6)


@pytest.mark.parametrize("spec", relujax.ACTIVATIONS.values(), ids=lambda s: s.name)
def test_nan_propagates(spec):
    y = spec.fn(jnp.array([jnp.nan, 1.0], jnp.float32), **spec.default_kwargs)
    assert np.isnan(y[0]) and not np.isnan(y[1])


@pytest.mark.parametrize(
    "spec", [s for s in relujax.ACTIVATIONS.values() if s.jax_nn is not None], ids=lambda s: s.name
)
def test_jax_nn_counterpart_agrees_on_ordinary_inputs(spec):
    """The registry's jax.nn counterpart computes the same function (benchmarks rely on it)."""
    x = jnp.linspace(-6.0, 6.0, 241, dtype=jnp.float32)
    np.testing.assert_allclose(
        spec.jax_nn(x, **spec.default_kwargs),
        spec.fn(x, **spec.default_kwargs),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("spec", relujax.ACTIVATIONS.values(), ids=lambda s: s.name)
def test_shapes_and_python_scalars(spec):
    for shape in [(), (0,), (2, 3, 4)]:
        y = spec.fn(jnp.ones(shape, jnp.float32), **spec.default_kwargs)
        assert y.shape == shape and y.dtype == jnp.float32
    assert jnp.asarray(spec.fn(1.5, **spec.default_kwargs)).shape == ()


def test_documented_examples():
    """The key figures quoted in the docstrings and README."""
    tail = relujax.gelu(jnp.float32(-5.0), approximate=True)  # jax.nn.gelu: -0.0
    np.testing.assert_allclose(tail, reference.gelu(np.array(-5.0), approximate=True)[0], rtol=1e-5)
    np.testing.assert_allclose(jax.grad(relujax.elu)(jnp.float32(-80.0)), np.exp(-80.0), rtol=1e-6)
    np.testing.assert_array_equal(
        relujax.prelu(jnp.array([[-1.0, 2.0], [-3.0, -4.0]]), jnp.array([0.25, 0.5])),
        [[-0.25, 2.0], [-0.75, -2.0]],
    )
