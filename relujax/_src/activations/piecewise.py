"""The piecewise-linear activations: relu, relu6, leaky_relu, prelu, rrelu.

Each is linear with slope 1 on its identity side and a constant "flat" slope elsewhere (0 for
relu and relu6, the negative slope for the leaky ones). The derivative at a kink is
`(1 - s) * flat slope + s * 1` for `subgradient=s`. The backward pass keeps one byte per
element: a bool mask of the identity side when s is 0 or 1, or an int8 region code
(0 flat, 1 kink, 2 identity) for any other s; with `residual="bits"` that is packed to 1 bit
per element (2 bits for the code).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from relujax._src.activations import _bits, _checks
from relujax._src.activations._rules import (
    add_tangents,
    is_zero,
    linear,
    meet_dtype,
    scale_param,
)


def _mul(a: jax.Array, g: jax.Array) -> jax.Array:
    """`a * g` in `g`'s shape and dtype, computed in float32 or wider."""
    cd = meet_dtype(g.dtype, a.dtype)
    return (a.astype(cd) * g.astype(cd)).astype(g.dtype)


def _region(mode: str, x: jax.Array, hi: float | None) -> jax.Array:
    """Where each element lies: a bool mask of the identity side, or an int8 region code."""
    if mode == "open":
        return (x > 0) if hi is None else (x > 0) & (x < hi)
    if mode == "closed":
        return (x >= 0) if hi is None else (x >= 0) & (x <= hi)
    inside = (x > 0) if hi is None else (x > 0) & (x < hi)
    kink = (x == 0) if hi is None else (x == 0) | (x == hi)
    return inside.astype(jnp.int8) * 2 + kink.astype(jnp.int8)


def _select(region: jax.Array, flat: jax.Array | None, kink: jax.Array | None, g: jax.Array):
    """g on the identity side, kink * g at a kink (int8 code only), flat * g elsewhere."""
    other = jnp.zeros_like(g) if flat is None else _mul(flat, g)
    if region.dtype == jnp.bool_:
        return jnp.where(region, g, other)
    return lax.select_n(region, other, _mul(kink, g), g)


@linear
def _select_unpacked(region, flat, kink, g):
    return _select(region, flat, kink, g)


@linear
def _select_packed(packed, flat, kink, g):
    return _select(_bits.unpack(packed, g.shape), flat, kink, g)


def _tangent(residual: str, region: jax.Array, flat, kink, g: jax.Array) -> jax.Array:
    """The x-tangent; the backward pass keeps `region` as it is ("mask") or packed ("bits")."""
    if residual == "bits":
        return _select_packed(_bits.pack(region), flat, kink, g)
    return _select_unpacked(region, flat, kink, g)


def _kink_slope(flat: jax.Array | None, s: jax.Array) -> jax.Array:
    return s if flat is None else flat + s.astype(flat.dtype) * (1 - flat)


# --- relu and relu6: flat slope 0 -------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _clipped(mode: str, residual: str, hi: float | None, x: jax.Array, s: jax.Array) -> jax.Array:
    y = jnp.maximum(x, jnp.zeros((), x.dtype))
    return y if hi is None else jnp.minimum(y, jnp.asarray(hi, x.dtype))


@functools.partial(_clipped.defjvp, symbolic_zeros=True)
def _clipped_jvp(mode, residual, hi, primals, tangents):
    x, s = primals
    g, _ = tangents  # subgradient is a convention, not differentiated
    y = _clipped(mode, residual, hi, x, s)
    if is_zero(g):
        return y, jnp.zeros_like(y)
    return y, _tangent(residual, _region(mode, x, hi), None, s.astype(x.dtype), g)


def relu(x: ArrayLike, *, subgradient: float = 0.0, residual: str = "mask") -> jax.Array:
    r"""Rectified linear unit, :math:`\max(x, 0)`, with a chosen derivative at 0.

    The derivative is 1 for :math:`x > 0`, 0 for :math:`x < 0` and `subgradient` at 0 (default
    0, as `jax.nn.relu` and PyTorch; Bertoin et al., NeurIPS 2021). `relu(nan)` is nan. The
    backward pass keeps one byte per element.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      subgradient: derivative at the kink x = 0, a number in [0, 1] (may be traced).
      residual: what the backward pass keeps: "mask" (1 byte per element) or "bits"
        (packed: 1 bit per element, 2 bits for a subgradient other than 0 and 1).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax, jax.numpy as jnp, relujax
      >>> relujax.relu(jnp.array([-2.0, 0.0, 1.5]))
      Array([0. , 0. , 1.5], dtype=float32)
      >>> jax.grad(lambda x: relujax.relu(x, subgradient=0.5))(0.0)
      Array(0.5, dtype=float32)
    """
    x = _checks.floating_input("relu", x)
    mode, s = _checks.subgradient("relu", subgradient)
    residual = _bits.check_residual("relu", residual)
    return _clipped(mode, residual, None, x, jnp.asarray(s, x.dtype))


def relu6(x: ArrayLike, *, subgradient: float = 0.0, residual: str = "mask") -> jax.Array:
    r"""ReLU capped at 6, :math:`\min(\max(x, 0), 6)`, with a chosen derivative at both kinks.

    The derivative is 1 on :math:`(0, 6)`, 0 outside :math:`[0, 6]`, and `subgradient` at
    0 and at 6 (the flat side has slope 0, the identity side 1). One byte per element is kept.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      subgradient: derivative at the kinks x = 0 and x = 6, a number in [0, 1].
      residual: what the backward pass keeps: "mask" (1 byte per element) or "bits"
        (packed: 1 bit per element, 2 bits for a subgradient other than 0 and 1).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax.numpy as jnp, relujax
      >>> relujax.relu6(jnp.array([-1.0, 3.0, 7.0]))
      Array([0., 3., 6.], dtype=float32)
    """
    x = _checks.floating_input("relu6", x)
    mode, s = _checks.subgradient("relu6", subgradient)
    residual = _bits.check_residual("relu6", residual)
    return _clipped(mode, residual, 6.0, x, jnp.asarray(s, x.dtype))


# --- leaky_relu, prelu, rrelu (evaluation): a flat slope a --------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _leaky(mode: str, residual: str, x: jax.Array, slope: jax.Array, s: jax.Array) -> jax.Array:
    return jnp.where(x > 0, x, _mul(slope, x))


@functools.partial(_leaky.defjvp, symbolic_zeros=True)
def _leaky_jvp(mode, residual, primals, tangents):
    x, slope, s = primals
    g, t_slope, _ = tangents
    y = _leaky(mode, residual, x, slope, s)
    dx = dslope = None
    if not is_zero(g):
        dx = _tangent(residual, _region(mode, x, None), slope, _kink_slope(slope, s), g)
    if not is_zero(t_slope):
        # d/da (a * x) = x on the flat side (x <= 0), 0 on the identity side: min(x, 0).
        dslope = scale_param(jnp.minimum(x, jnp.zeros((), x.dtype)), t_slope)
    if dx is None and dslope is None:
        return y, jnp.zeros_like(y)
    return y, add_tangents(dx, dslope)


def leaky_relu(
    x: ArrayLike,
    negative_slope: ArrayLike = 0.01,
    *,
    subgradient: float = 0.0,
    residual: str = "mask",
) -> jax.Array:
    r"""Leaky ReLU: :math:`x` for :math:`x > 0`, :math:`a x` otherwise (:math:`a` = slope).

    The derivative at 0 is :math:`a + s (1 - a)` for `subgradient=s`: the default s = 0 gives
    `a`, as PyTorch (`jax.nn.leaky_relu` gives 1). `negative_slope` is cast to `x.dtype` and
    is differentiable. One byte per element is kept for the backward pass.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      negative_slope: slope :math:`a` for :math:`x < 0`, a scalar (may be traced).
      subgradient: position of the derivative at 0 between `a` (0) and 1 (1).
      residual: what the backward pass keeps: "mask" (1 byte per element) or "bits"
        (packed: 1 bit per element, 2 bits for a subgradient other than 0 and 1).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax.numpy as jnp, relujax
      >>> relujax.leaky_relu(jnp.array([-2.0, 0.0, 3.0]), 0.1)
      Array([-0.2,  0. ,  3. ], dtype=float32)
    """
    x = _checks.floating_input("leaky_relu", x)
    slope = _checks.hyperparameter("leaky_relu", "negative_slope", negative_slope, x)
    _checks.check_range("leaky_relu", "negative_slope", negative_slope)
    mode, s = _checks.subgradient("leaky_relu", subgradient)
    residual = _bits.check_residual("leaky_relu", residual)
    return _leaky(mode, residual, x, slope, jnp.asarray(s, x.dtype))


def prelu(
    x: ArrayLike, alpha: ArrayLike, *, subgradient: float = 0.0, residual: str = "mask"
) -> jax.Array:
    r"""Parametric ReLU (He et al., 2015): leaky ReLU with a learned slope :math:`\alpha`.

    `alpha` is a scalar, or a per-channel vector of shape `(C,)` (or `(1,)`, as PyTorch's
    `num_parameters=1`) broadcast over the last axis of `x` (channels-last). Its gradient is the
    cotangent times :math:`\min(x, 0)`, summed over every axis it was broadcast along, in
    float32 or wider. Derivative at 0 as `leaky_relu`.

    Args:
      x: floating array (float16, bfloat16, float32 or float64), channels last.
      alpha: slope for :math:`x < 0`, shape `()`, `(1,)` or `(x.shape[-1],)`.
      subgradient: position of the derivative at 0 between `alpha` (0) and 1 (1).
      residual: what the backward pass keeps: "mask" (1 byte per element) or "bits"
        (packed: 1 bit per element, 2 bits for a subgradient other than 0 and 1).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax, jax.numpy as jnp, relujax
      >>> x = jnp.array([[-1.0, 2.0], [-3.0, -4.0]])
      >>> relujax.prelu(x, jnp.array([0.25, 0.5]))
      Array([[-0.25,  2.  ],
             [-0.75, -2.  ]], dtype=float32)
      >>> jax.grad(lambda a: relujax.prelu(x, a).sum())(jnp.array([0.25, 0.5]))
      Array([-4., -4.], dtype=float32)
    """
    x = _checks.floating_input("prelu", x)
    slope = _checks.hyperparameter("prelu", "alpha", alpha, x, channels=True)
    _checks.check_range("prelu", "alpha", alpha)
    if slope.shape == (1,):
        slope = slope.reshape(())
    elif slope.ndim == 1:  # (C,) -> (1, ..., 1, C): explicit, so rank promotion never applies
        slope = slope.reshape((1,) * (x.ndim - 1) + slope.shape)
    mode, s = _checks.subgradient("prelu", subgradient)
    residual = _bits.check_residual("prelu", residual)
    return _leaky(mode, residual, x, slope, jnp.asarray(s, x.dtype))


# --- rrelu (training): one random slope per element ---------------------------------------------


def _slopes(key: jax.Array, x_like: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    return jax.random.uniform(key, x_like.shape, x_like.dtype, lower, upper)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _random_leaky(mode, residual, x, key, lower, upper, s):
    return jnp.where(x > 0, x, _slopes(key, x, lower, upper) * x)


@linear
def _random_tangent(stored, key, lower, upper, s, g):
    # The slopes are drawn again from the key here instead of being kept: 1 byte per element.
    region = _bits.unpack(stored, g.shape) if stored.dtype == jnp.uint8 else stored
    slopes = _slopes(key, g, lower, upper)
    return _select(region, slopes, _kink_slope(slopes, s), g)


@functools.partial(_random_leaky.defjvp, symbolic_zeros=True)
def _random_leaky_jvp(mode, residual, primals, tangents):
    x, key, lower, upper, s = primals
    g = tangents[0]  # the bounds of the random slopes are not trained
    y = _random_leaky(mode, residual, x, key, lower, upper, s)
    if is_zero(g):
        return y, jnp.zeros_like(y)
    region = _region(mode, x, None)
    stored = _bits.pack(region) if residual == "bits" else region
    return y, _random_tangent(stored, key, lower, upper, s, g)


def _check_key(key: object) -> jax.Array:
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():  # type: ignore[attr-defined]
            raise ValueError(
                f"relujax.rrelu: expected key to be a single PRNG key (shape ()), got shape "
                f"{key.shape}; split it outside, or vmap over keys."  # type: ignore[attr-defined]
            )
        return key  # type: ignore[return-value]
    if dtype is not None and dtype == jnp.uint32 and key.ndim == 1:  # type: ignore[attr-defined]
        return key  # type: ignore[return-value]
    raise TypeError(
        f"relujax.rrelu: expected key to be a PRNG key (jax.random.key(seed)) or None, got "
        f"{type(key).__name__} with dtype {dtype}."
    )


def rrelu(
    x: ArrayLike,
    key: jax.Array | None = None,
    lower: ArrayLike = 1.0 / 8.0,
    upper: ArrayLike = 1.0 / 3.0,
    *,
    subgradient: float = 0.0,
    residual: str = "mask",
) -> jax.Array:
    r"""Randomized leaky ReLU (Xu et al., 2015): a random negative slope per element.

    With a `key` (training) every element gets its own slope drawn as
    `jax.random.uniform(key, x.shape, x.dtype, lower, upper)`; the same key gives the same
    result. With `key=None` (evaluation) the slope is the mean `(lower + upper) / 2`, as
    PyTorch. The slopes are drawn again from the key in the backward pass, so only one byte per
    element is kept; the bounds are not differentiated in training mode.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      key: a PRNG key, or None for the deterministic mean slope.
      lower: lower bound of the slopes (default 1/8).
      upper: upper bound of the slopes (default 1/3), at least `lower`.
      subgradient: position of the derivative at 0 between the slope (0) and 1 (1).
      residual: what the backward pass keeps: "mask" (1 byte per element) or "bits"
        (packed: 1 bit per element, 2 bits for a subgradient other than 0 and 1).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax, jax.numpy as jnp, relujax
      >>> relujax.rrelu(jnp.array([-1.0, 2.0]), lower=0.1, upper=0.3)
      Array([-0.2,  2. ], dtype=float32)
      >>> y = relujax.rrelu(-jnp.ones(3), jax.random.key(0))
      >>> bool(jnp.all((-1 / 3 <= y) & (y <= -1 / 8)))
      True
    """
    x = _checks.floating_input("rrelu", x)
    lo = _checks.hyperparameter("rrelu", "lower", lower, x)
    hi = _checks.hyperparameter("rrelu", "upper", upper, x)
    _checks.check_range("rrelu", "lower", lower)
    _checks.check_range("rrelu", "upper", upper)
    lo_v, hi_v = _checks.concrete_float(lower), _checks.concrete_float(upper)
    if lo_v is not None and hi_v is not None and lo_v > hi_v:
        raise ValueError(
            f"relujax.rrelu: expected lower <= upper, got lower={lo_v} and upper={hi_v}."
        )
    mode, s = _checks.subgradient("rrelu", subgradient)
    residual = _bits.check_residual("rrelu", residual)
    s = jnp.asarray(s, x.dtype)
    if key is None:
        return _leaky(mode, residual, x, (lo + hi.astype(lo.dtype)) / 2, s)
    key = _check_key(key)
    return _random_leaky(mode, residual, x, key, lo.astype(x.dtype), hi.astype(x.dtype), s)
