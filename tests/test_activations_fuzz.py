"""Property-based tests over the activation registry (hypothesis): random shapes, every float
dtype, values across the whole range, random hyperparameters inside and outside their domain.

Inside the domain the values match the float64 reference within the dtype's tolerance (the
same rule as tests/test_activations_values.py) and the derivative of every finite input is
finite; outside it, the documented error. CI runs the "ci" profile (derandomized, a few
examples per activation); `RELUJAX_HYPOTHESIS=long` runs many more, randomized.
"""

from __future__ import annotations

import contextlib
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relujax
from tests.test_activations_values import RTOL

settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(os.environ.get("RELUJAX_HYPOTHESIS", "ci"))

DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
NAMES = sorted(relujax.ACTIVATIONS)
PIECEWISE = sorted(n for n, s in relujax.ACTIVATIONS.items() if s.piecewise_linear)

# Hyperparameter domains, as the functions document them (relujax/_src/activations/), narrowed
# where noted to where the float64 reference stays a fair judge of low-precision results.
_slope = st.floats(-2.0, 2.0, allow_subnormal=False)
_alpha = st.floats(
    0.1, 3.0
)  # elu/celu: any number (nonzero for celu); small |alpha| is ill-conditioned


@st.composite
def _rrelu_bounds(draw):
    lo, hi = sorted((draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))))
    return {"lower": lo, "upper": hi}


DOMAIN = {
    "leaky_relu": st.fixed_dictionaries({"negative_slope": _slope}),
    "prelu": st.fixed_dictionaries({"alpha": _slope}),
    "rrelu": _rrelu_bounds(),
    "elu": st.fixed_dictionaries({"alpha": _alpha}),
    "celu": st.fixed_dictionaries({"alpha": _alpha}),
    "gelu": st.fixed_dictionaries({"approximate": st.booleans()}),
    # threshold >= 20: below it the switch to the identity jumps by more than an ulp
    "softplus": st.fixed_dictionaries(
        {"beta": st.floats(0.25, 4.0), "threshold": st.floats(20.0, 40.0)}
    ),
}

# Outside the domain: (kwargs, exception, message) per activation; every piecewise-linear one
# also gets a subgradient outside [0, 1].
OUTSIDE = {
    "leaky_relu": [
        ({"negative_slope": math.nan}, ValueError, "expected negative_slope to be a number")
    ],
    "prelu": [
        ({"alpha": math.nan}, ValueError, "expected alpha to be a number"),
        (
            {"alpha": np.full(7, 0.25, np.float32)},
            ValueError,
            "expected alpha to be a scalar or have shape \\(C,\\)",
        ),
    ],
    "rrelu": [
        ({"lower": 0.5, "upper": 0.25}, ValueError, "expected lower <= upper"),
        ({"lower": math.nan}, ValueError, "expected lower to be a number"),
    ],
    "elu": [({"alpha": math.nan}, ValueError, "expected alpha to be a number")],
    "celu": [
        ({"alpha": 0.0}, ValueError, "expected alpha to be a nonzero number"),
        ({"alpha": math.nan}, ValueError, "expected alpha to be a nonzero number"),
    ],
    "gelu": [({"approximate": 1}, TypeError, "expected approximate to be a Python bool")],
    "softplus": [
        ({"beta": 0.0}, ValueError, "expected beta to be a positive number"),
        ({"beta": -1.0}, ValueError, "expected beta to be a positive number"),
        ({"threshold": math.nan}, ValueError, "expected threshold to be a number"),
    ],
}


def _specials(dtype, kinks):
    info = jnp.finfo(dtype)
    tiny, sub, big = float(info.tiny), float(info.smallest_subnormal), float(info.max)
    eps = float(info.eps)
    out = [0.0, -0.0, math.inf, -math.inf, math.nan, big, -big, tiny, -tiny, sub, -sub, 1.0, -1.0]
    for k in kinks:
        out += [k, k * (1 + eps), k * (1 - eps), k + eps, k - eps]
    return out


@st.composite
def _inputs(draw, spec):
    """(dtype, x as a numpy array of that dtype's values, held in float64)."""
    dtype = draw(st.sampled_from(DTYPES))
    # few distinct shapes: each new (shape, dtype) costs a compilation
    shape = tuple(draw(st.lists(st.sampled_from([1, 3, 4]), max_size=2)))
    width = 16 if dtype == jnp.float16 else (64 if dtype == jnp.float64 else 32)
    element = st.one_of(
        st.sampled_from(_specials(dtype, spec.kinks)),
        st.floats(allow_nan=True, allow_infinity=True, width=width),
        st.floats(-30.0, 30.0, width=width),
    )
    n = math.prod(shape)
    values = draw(st.lists(element, min_size=n, max_size=n))
    with np.errstate(over="ignore"):  # f32 values beyond bf16's range round to inf, as a cast would
        x = np.asarray(values, np.float64).reshape(shape).astype(jnp.dtype(dtype))
    return dtype, x


def assert_matches(x, actual, expected, dtype, what, derivative):
    """`actual` equals the float64 reference rounded to `dtype` within a few ulps, the tolerance
    growing with the condition number |x f'(x) / f(x)| (tests/test_activations_values.py's rule).

    Values within 16x of the smallest normal may come out as zero: XLA:CPU flushes subnormal
    intermediates (celu's x / alpha, softplus's beta * x) to zero even when the result is normal.
    """
    info = jnp.finfo(dtype)
    tiny = float(info.tiny)
    a = np.asarray(actual, np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.asarray(expected).astype(jnp.dtype(dtype)).astype(np.float64)
        cond = 1.0 + np.nan_to_num(np.abs(x * derivative / expected))
        ok = np.abs(a - e) <= RTOL[dtype] * cond * np.abs(e) + 2 * float(info.smallest_subnormal)
    ok |= (np.abs(e) <= 16 * tiny) & (np.abs(a) <= np.abs(e))
    ok |= (a == e) | (np.isnan(a) & np.isnan(e))
    bad = ~ok
    assert not bad.any(), (
        f"{what}: {bad.sum()} mismatches at x={x[bad][:8]}: got {a[bad][:8]}, expected {e[bad][:8]}"
    )


def _rounded(kwargs, dtype):
    """The hyperparameters as the function sees them: cast to x.dtype."""
    return {
        k: (
            float(np.asarray(v, np.float64).astype(jnp.dtype(dtype))) if isinstance(v, float) else v
        )
        for k, v in kwargs.items()
    }


def _subgradient(spec):
    return st.sampled_from([0.0, 0.5, 1.0]) if spec.piecewise_linear else st.just(None)


@pytest.mark.parametrize("name", NAMES)
@settings(PROFILE)
@given(data=st.data())
def test_values_match_reference_and_derivatives_are_finite(name, data):
    spec = relujax.ACTIVATIONS[name]
    dtype, x = data.draw(_inputs(spec), label="dtype, x")
    kwargs = dict(spec.default_kwargs)
    if name in DOMAIN:
        kwargs.update(data.draw(DOMAIN[name], label="hyperparameters"))
    s = data.draw(_subgradient(spec), label="subgradient")
    if s is not None:
        kwargs["subgradient"] = s
    # float64 needs x64, on only here (the suite runs as users do, x64 off)
    with jax.enable_x64(True) if dtype == jnp.float64 else contextlib.nullcontext():
        xj = jnp.asarray(x, dtype)
        assert xj.dtype == dtype and xj.shape == x.shape
        f = lambda v: spec.fn(v, **kwargs)  # noqa: E731
        y, vjp_fn = jax.vjp(f, xj)
        (dy,) = vjp_fn(jnp.ones_like(y))
        assert y.dtype == dtype and y.shape == x.shape and dy.dtype == dtype
        x64 = x.astype(np.float64)
        # (at least 1-d: reference.gelu does not take 0-d arrays)
        ref_y, ref_dy, _ = spec.reference(np.atleast_1d(x64), **_rounded(kwargs, dtype))
        ref_y, ref_dy = ref_y.reshape(x.shape), ref_dy.reshape(x.shape)
        assert_matches(x64, np.asarray(y).astype(np.float64), ref_y, dtype, name, ref_dy)
        finite = np.isfinite(x64)
        dy64 = np.asarray(dy).astype(np.float64)
        assert np.all(np.isfinite(dy64[finite])), (name, x64[finite], dy64[finite])


@pytest.mark.parametrize("name", sorted(set(OUTSIDE) | set(PIECEWISE)))
@settings(PROFILE)
@given(data=st.data())
def test_hyperparameters_outside_the_domain_raise_the_documented_error(name, data):
    spec = relujax.ACTIVATIONS[name]
    cases = list(OUTSIDE.get(name, []))
    if spec.piecewise_linear:
        bad = data.draw(
            st.one_of(st.floats(max_value=-1e-6), st.floats(min_value=1.000001), st.just(math.nan)),
            label="subgradient",
        )
        cases.append(({"subgradient": bad}, ValueError, "expected subgradient in \\[0, 1\\]"))
    change, error, match = data.draw(st.sampled_from(cases), label="case")
    shape = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2), label="shape"))
    x = jnp.zeros(shape, jnp.float32)
    with pytest.raises(error, match=f"relujax.{name}: {match}"):
        spec.fn(x, **{**spec.default_kwargs, **change})


@pytest.mark.parametrize("name", NAMES)
@settings(PROFILE)
@given(dtype=st.sampled_from([np.int8, np.int32, np.uint8, np.bool_]))
def test_non_floating_inputs_raise_type_error(name, dtype):
    spec = relujax.ACTIVATIONS[name]
    with pytest.raises(TypeError, match=f"relujax.{name}: expected x to be a floating array"):
        spec.fn(jnp.zeros((2,), dtype), **spec.default_kwargs)
