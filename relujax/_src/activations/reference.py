"""Float64 NumPy references: value, first and second derivative of every activation.

Written from the textbook formulas, independently of the JAX implementations, for the tests
and benchmarks. Each takes a float64 array and the activation's keyword arguments and returns
`(y, dy, d2y)`; at a kink `dy` follows the `subgradient` convention. Limits at +-inf are
explicit. Only NumPy and the standard library are used (no SciPy at runtime).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        e = np.exp(-np.abs(t))
        return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _piecewise(x, flat, s, hi=None) -> Triple:
    """Slope 1 on (0, hi), `flat` below 0, 0 above hi; `(1 - s) flat + s` at the kinks."""
    x = _f64(x)
    flat = np.broadcast_to(np.asarray(flat, np.float64), x.shape)
    with np.errstate(invalid="ignore"):
        y = np.where(x > 0, x, np.where(flat == 0, 0.0, flat * x))
    dy = np.where(x > 0, 1.0, flat)
    dy = np.where(x == 0, (1 - s) * flat + s, dy)
    if hi is not None:
        y = np.where(x >= hi, hi, y)
        dy = np.where(x > hi, 0.0, np.where(x == hi, s, dy))
    nan = np.isnan(x)
    d2y = np.zeros_like(x)
    return np.where(nan, np.nan, y), np.where(nan, np.nan, dy), np.where(nan, np.nan, d2y)


def relu(x, *, subgradient=0.0) -> Triple:
    return _piecewise(x, 0.0, subgradient)


def relu6(x, *, subgradient=0.0) -> Triple:
    return _piecewise(x, 0.0, subgradient, hi=6.0)


def leaky_relu(x, negative_slope=0.01, *, subgradient=0.0) -> Triple:
    return _piecewise(x, negative_slope, subgradient)


def prelu(x, alpha, *, subgradient=0.0) -> Triple:
    return _piecewise(x, np.asarray(alpha, np.float64), subgradient)


def rrelu(x, lower=1.0 / 8.0, upper=1.0 / 3.0, *, subgradient=0.0) -> Triple:
    """Evaluation mode (no key): the mean slope."""
    return _piecewise(x, (lower + upper) / 2.0, subgradient)


def _exp_unit(x, scale, alpha, inner) -> Triple:
    """scale * (x for x > 0, alpha (exp(x / inner) - 1) for x <= 0)."""
    x = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(np.minimum(x, 0.0) / inner)
        y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / inner))
        dy = np.where(x > 0, 1.0, alpha / inner * e)
        d2y = np.where(x > 0, 0.0, alpha / inner**2 * e)
        return scale * y, scale * dy, scale * d2y


def elu(x, alpha=1.0) -> Triple:
    return _exp_unit(x, 1.0, alpha, 1.0)


def celu(x, alpha=1.0) -> Triple:
    return _exp_unit(x, 1.0, alpha, alpha)


def selu(x) -> Triple:
    return _exp_unit(x, SELU_SCALE, SELU_ALPHA, 1.0)


_erfc = np.frompyfunc(math.erfc, 1, 1)
_C = math.sqrt(2.0 / math.pi)
_K = 0.044715


def gelu(x, approximate=False) -> Triple:
    x = _f64(x)
    finite = np.where(np.isfinite(x), x, 0.0)
    if approximate:
        with np.errstate(over="ignore", invalid="ignore"):
            t = 2.0 * _C * (finite + _K * finite**3)
            dt = 2.0 * _C * (1.0 + 3.0 * _K * finite**2)
            d2t = 2.0 * _C * 6.0 * _K * finite
            s = _sigmoid(t)
            ds = s * _sigmoid(-t)  # sigmoid'(t)
            d2s = ds * (1.0 - 2.0 * s)
            y = finite * s
            dy = s + _mul(ds, finite * dt)
            d2y = 2.0 * _mul(ds, dt) + finite * (_mul(d2s, dt**2) + _mul(ds, d2t))
    else:
        cdf = 0.5 * _erfc(-finite / math.sqrt(2.0)).astype(np.float64)
        with np.errstate(over="ignore", under="ignore"):
            pdf = np.exp(-0.5 * finite**2) / math.sqrt(2.0 * math.pi)
            d2y = _mul(pdf, 2.0 - finite**2)
        y = finite * cdf
        dy = cdf + finite * pdf
    return _limits(x, y, dy, d2y, y_pos=np.inf, y_neg=0.0, dy_pos=1.0, dy_neg=0.0)


def silu(x) -> Triple:
    x = _f64(x)
    finite = np.where(np.isfinite(x), x, 0.0)
    s, sn = _sigmoid(finite), _sigmoid(-finite)
    y = finite * s
    dy = s * (1.0 + finite * sn)
    d2y = s * sn * (2.0 + finite * (sn - s))
    return _limits(x, y, dy, d2y, y_pos=np.inf, y_neg=0.0, dy_pos=1.0, dy_neg=0.0)


def softplus(x, beta=1.0, threshold=20.0) -> Triple:
    x = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        bx = beta * x
        linear = bx > threshold
        sp = (np.maximum(bx, 0.0) + np.log1p(np.exp(-np.abs(bx)))) / beta
        s = _sigmoid(bx)
        y = np.where(linear, x, sp)
        dy = np.where(linear, 1.0, s)
        d2y = np.where(linear, 0.0, beta * s * _sigmoid(-bx))
    return y, dy, d2y


def _mul(small: np.ndarray, big: np.ndarray) -> np.ndarray:
    """`small * big` with 0 where `small` underflowed to 0 (the limit, not 0 * inf = nan)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(small == 0.0, 0.0, small * big)


def _limits(x, y, dy, d2y, *, y_pos, y_neg, dy_pos, dy_neg) -> Triple:
    """Puts the limits at +-inf and nan in place of the values computed at 0."""
    pos, neg, nan = np.isposinf(x), np.isneginf(x), np.isnan(x)
    y = np.where(pos, y_pos, np.where(neg, y_neg, np.where(nan, np.nan, y)))
    dy = np.where(pos, dy_pos, np.where(neg, dy_neg, np.where(nan, np.nan, dy)))
    d2y = np.where(pos | neg, 0.0, np.where(nan, np.nan, d2y))
    return y, dy, d2y


def grid(dtype: np.dtype | type, kinks: tuple[float, ...] = (), num: int = 801) -> np.ndarray:
    """Test points in `dtype`: a dense grid on [-10, 10], each kink and its float neighbours,
    -80 and -100 (exponential tails), +-inf, nan, the largest finite and the smallest normal
    and subnormal magnitudes of `dtype`, and 1e30 (inf in 16-bit).
    """
    dtype = np.dtype(dtype)
    info = jnp.finfo(dtype)
    points = [np.linspace(-10.0, 10.0, num)]
    for k in kinks:
        k_d = np.asarray(k, dtype)
        points.append(np.array([np.nextafter(k_d, -np.inf), k_d, np.nextafter(k_d, np.inf)]))
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, -80.0, -100.0]
    special += [float(info.max), -float(info.max), float(info.tiny), -float(info.tiny)]
    special += [float(info.smallest_subnormal), -float(info.smallest_subnormal)]
    with np.errstate(over="ignore"):
        out = np.concatenate([np.asarray(p, np.float64) for p in points] + [np.array(special)])
        return out.astype(dtype)
