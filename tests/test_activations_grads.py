"""Derivatives of every registered activation: reference, kinks, limits, transformations.

Parametrized over `relujax.ACTIVATIONS`; the float64 references give first and second
derivatives, including the `subgradient` convention at every kink.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from test_activations_values import CASES, derivative

import relujax
from relujax._src.activations import reference

PIECEWISE = [s for s in relujax.ACTIVATIONS.values() if s.piecewise_linear]
SPECS = list(relujax.ACTIVATIONS.values())


def away_from_kinks(x, kinks, margin=0.05):
    keep = np.isfinite(x)
    for k in kinks:
        keep &= np.abs(x.astype(np.float64) - k) > margin
    return x[keep]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_limits_at_infinity(spec):
    x = jnp.array([-jnp.inf, jnp.inf], jnp.float32)
    f = lambda x: spec.fn(x, **spec.default_kwargs)  # noqa: E731
    y, dy = f(x), derivative(f, x)
    y_ref, dy_ref, _ = spec.reference(np.array([-np.inf, np.inf]), **spec.default_kwargs)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))
    np.testing.assert_array_equal(dy, dy_ref.astype(np.float32))


@pytest.mark.parametrize("s", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spec", PIECEWISE, ids=lambda s: s.name)
def test_exact_derivative_at_kinks(spec, s):
    """relu'(0) = s, leaky'(0) = a + s(1 - a), relu6'(0) = relu6'(6) = s; concrete or traced s."""
    x = jnp.array(spec.kinks, jnp.float32)
    _, expected, _ = spec.reference(np.asarray(x, np.float64), **spec.default_kwargs, subgradient=s)
    concrete = derivative(lambda x: spec.fn(x, **spec.default_kwargs, subgradient=s), x)
    traced = jax.jit(
        lambda x, s: derivative(lambda x: spec.fn(x, **spec.default_kwargs, subgradient=s), x)
    )(x, jnp.float32(s))
    np.testing.assert_allclose(concrete, expected, rtol=1e-7)
    np.testing.assert_allclose(traced, expected, rtol=1e-7)
    if spec.name in ("relu", "relu6"):  # no rounding at all: exactly s
        np.testing.assert_array_equal(concrete, np.full(len(spec.kinks), s, np.float32))


def test_leaky_relu_kink_is_slope_not_one():
    """PyTorch's convention (leaky'(0) = a), not jax.nn's (1)."""
    np.testing.assert_allclose(jax.grad(relujax.leaky_relu)(0.0), 0.01, rtol=1e-7)


@pytest.mark.x64
@pytest.mark.parametrize("spec,kwargs", CASES)
def test_check_grads_order2_away_from_kinks(spec, kwargs):
    x = jax.random.uniform(jax.random.key(0), (12,), jnp.float64, -8.0, 8.0)
    x = jnp.asarray(away_from_kinks(np.asarray(x), spec.kinks, margin=0.1))
    # With the learnable hyperparameters as arguments too; jit compiles each derivative once.
    names = [n for n in spec.params if n in kwargs]
    rest = {k: v for k, v in kwargs.items() if k not in names}
    params = tuple(jnp.asarray(kwargs[n], jnp.float64) for n in names)
    f = jax.jit(lambda x, *ps: spec.fn(x, **rest, **dict(zip(names, ps, strict=True))))
    check_grads(f, (x, *params), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize(
    "fn,alpha,inner",
    [
        (relujax.elu, 1.0, 1.0),
        (lambda x: relujax.elu(x, 0.5), 0.5, 1.0),
        (lambda x: relujax.celu(x, 2.0), 1.0, 2.0),  # derivative e^(x / alpha)
        (relujax.selu, reference.SELU_SCALE * reference.SELU_ALPHA, 1.0),
    ],
    ids=["elu", "elu-0.5", "celu-2", "selu"],
)
def test_exponential_derivative_accurate_to_minus_80_in_float32(fn, alpha, inner):
    """jax.nn.elu computes elu' as y + alpha: 0 below about x = -17 in float32."""
    x = jnp.linspace(-80.0 * inner, -1e-3, 4001, dtype=jnp.float32)
    expected = alpha * np.exp(np.asarray(x, np.float64) / inner)
    dy = derivative(fn, x)
    assert dy.dtype == jnp.float32
    # Relative accuracy throughout; the condition number of exp is |x|, hence 80 ulps.
    np.testing.assert_allclose(dy, expected, rtol=80 * 1.2e-7)


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_negative_tail_keeps_relative_accuracy(approximate):
    """jax.nn's tanh form computes 0.5 x (1 + tanh z): -0.0 at x = -5 in float32."""
    x = jnp.linspace(-9.0, -3.0, 601, dtype=jnp.float32)
    f = lambda x: relujax.gelu(x, approximate=approximate)  # noqa: E731
    y_ref, dy_ref, _ = reference.gelu(np.asarray(x, np.float64), approximate=approximate)
    y, dy = f(x), derivative(f, x)
    assert np.all(np.asarray(y) < 0) and np.all(np.asarray(dy) < 0)
    np.testing.assert_allclose(y, y_ref, rtol=3e-5)
    np.testing.assert_allclose(dy, dy_ref, rtol=3e-5)


LOW = [jnp.bfloat16, jnp.float16]


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.params], ids=lambda s: s.name)
def test_float32_hyperparameters_never_promote_16bit_inputs(spec, dtype):
    """An f32 array slope keeps bf16/f16 in value and x-gradient; the slope's gradient is f32."""
    x = jnp.linspace(-3.0, 3.0, 12, dtype=dtype).reshape(3, 4)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in spec.default_kwargs.items()}
    params = {k: v for k, v in params.items() if k in spec.params}
    others = {k: v for k, v in spec.default_kwargs.items() if k not in spec.params}

    def loss(x, params):
        return jnp.sum(spec.fn(x, **others, **params).astype(jnp.float32))

    assert spec.fn(x, **others, **params).dtype == jnp.dtype(dtype)
    gx, gp = jax.grad(loss, argnums=(0, 1))(x, params)
    assert gx.dtype == jnp.dtype(dtype)
    for name, g in gp.items():
        assert g.dtype == jnp.float32, name
        assert np.isfinite(float(g)), name


def test_prelu_per_channel_alpha_gradient_sums_over_broadcast_axes():
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 3), jnp.float32)
    alpha = jnp.array([0.1, 0.25, -0.5], jnp.float32)
    cot = jax.random.normal(jax.random.key(2), x.shape, jnp.float32)
    y, (gx, ga) = jax.jit(
        lambda x, a, c: (relujax.prelu(x, a), jax.vjp(relujax.prelu, x, a)[1](c))
    )(x, alpha, cot)
    xn, cn, an = np.asarray(x, np.float64), np.asarray(cot, np.float64), np.asarray(alpha)
    np.testing.assert_allclose(y, np.where(xn > 0, xn, an * xn), rtol=1e-6)
    np.testing.assert_allclose(ga, (cn * np.minimum(xn, 0)).sum((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(gx, np.where(xn > 0, cn, an * cn), rtol=1e-6)
    assert ga.shape == (3,) and gx.shape == x.shape
    # bf16 input, f32 alpha: the alpha gradient is accumulated in f32, not bf16.
    xb = x.astype(jnp.bfloat16)
    ga16 = jax.jit(lambda x, a, c: jax.vjp(relujax.prelu, x, a)[1](c)[1])(
        xb, alpha, cot.astype(jnp.bfloat16)
    )
    xb64 = np.asarray(xb, np.float64)
    cb64 = np.asarray(cot.astype(jnp.bfloat16), np.float64)
    np.testing.assert_allclose(ga16, (cb64 * np.minimum(xb64, 0)).sum((0, 1, 2)), rtol=1e-5)


@pytest.mark.x64
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_transformation(spec):
    """grad, jvp, vjp, jacfwd, jacrev, hessian, scan and checkpoint agree (eager and jit)."""
    x = jax.random.uniform(jax.random.key(3), (6,), jnp.float64, -5.0, 5.0)
    x = jnp.asarray(away_from_kinks(np.asarray(x), spec.kinks, margin=0.1))
    f = lambda x: spec.fn(x, **spec.default_kwargs)  # noqa: E731
    total = lambda x: jnp.sum(f(x))  # noqa: E731
    _, dy_ref, d2y_ref = spec.reference(np.asarray(x), **spec.default_kwargs)

    def scanned(x):
        def body(carry, xi):
            return carry + f(xi), f(xi)

        acc, ys = jax.lax.scan(body, jnp.zeros((), x.dtype), x)
        return acc + jnp.sum(ys)

    def all_derivatives(x):
        return {
            "grad": jax.vmap(jax.grad(f))(x),
            "jvp": jax.jvp(f, (x,), (jnp.ones_like(x),))[1],
            "vjp": derivative(f, x),
            "jacfwd": jnp.diag(jax.jacfwd(f)(x)),
            "jacrev": jnp.diag(jax.jacrev(f)(x)),
            "scan": jax.grad(scanned)(x) / 2,
            "checkpoint": jax.grad(jax.checkpoint(total))(x),
            "hessian": jax.hessian(total)(x),
        }

    eager_grad = jax.grad(total)(x)  # one eager path too, outside any jit
    np.testing.assert_allclose(eager_grad, dy_ref, rtol=1e-12)
    for name, value in jax.jit(all_derivatives)(x).items():
        if name == "hessian":
            np.testing.assert_allclose(jnp.diag(value), d2y_ref, rtol=1e-10, atol=1e-300)
            np.testing.assert_array_equal(value - jnp.diag(jnp.diag(value)), 0.0)
        else:
            np.testing.assert_allclose(value, dy_ref, rtol=1e-12, err_msg=name)
