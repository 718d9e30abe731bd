"""The exponential linear units: elu, celu, selu.

Identity for x > 0 and a scaled `expm1` below. The derivative below 0 is computed as
`alpha * exp(x)` directly (never as `y + alpha`, which cancels to 0 below x = -17 in float32),
and it is the only thing kept for the backward pass: `x.dtype.itemsize` bytes per element.
At x = 0 the negative branch is used, as PyTorch and `jax.nn`: elu'(0) = alpha.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from relujax._src.activations import _checks
from relujax._src.activations._rules import add_tangents, compute_dtype, is_zero, scale, scale_param

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
# exp(-_EXP_FLOOR) is 0 in every float dtype; clamping there keeps `u * exp(u)` finite at -inf.
_EXP_FLOOR = -1.0e4


def _widen(x: jax.Array, *params: jax.Array) -> tuple[jax.Array, ...]:
    """`x` and the hyperparameters (cast to `x.dtype` first) in the compute dtype."""
    cd = compute_dtype(x.dtype)
    return (x.astype(cd), *(p.astype(x.dtype).astype(cd) for p in params))


@jax.custom_jvp
def _elu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    xc, a = _widen(x, alpha)
    return jnp.where(xc > 0, xc, a * jnp.expm1(jnp.minimum(xc, 0))).astype(x.dtype)


@functools.partial(_elu.defjvp, symbolic_zeros=True)
def _elu_jvp(primals, tangents):
    x, alpha = primals
    g, t_alpha = tangents
    y = _elu(x, alpha)
    xc, a = _widen(x, alpha)
    neg = jnp.minimum(xc, 0)
    dx = dalpha = None
    if not is_zero(g):
        dx = scale(jnp.where(xc > 0, 1, a * jnp.exp(neg)).astype(x.dtype), g)
    if not is_zero(t_alpha):
        dalpha = scale_param(jnp.where(xc > 0, 0, jnp.expm1(neg)).astype(x.dtype), t_alpha)
    if dx is None and dalpha is None:
        return y, jnp.zeros_like(y)
    return y, add_tangents(dx, dalpha)


def elu(x: ArrayLike, alpha: ArrayLike = 1.0) -> jax.Array:
    r"""Exponential linear unit (Clevert et al., 2015).

    .. math::
      \mathrm{elu}(x) = x \text{ for } x > 0, \quad \alpha (e^x - 1) \text{ for } x \le 0.

    The derivative is 1 for :math:`x > 0` and :math:`\alpha e^x` for :math:`x \le 0` (so
    elu'(0) = alpha, as PyTorch), accurate down to the smallest normal float; the second
    derivative is :math:`\alpha e^x` below 0. `alpha` is cast to `x.dtype` and differentiable.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      alpha: scale of the negative branch, a scalar (may be traced).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax, jax.numpy as jnp, relujax
      >>> relujax.elu(jnp.array([-1.0, 0.0, 2.0]))
      Array([-0.63212055,  0.        ,  2.        ], dtype=float32)
      >>> float(jax.grad(relujax.elu)(-80.0))  # jax.nn.elu gives 0.0
      1.8048513285848406e-35
    """
    x = _checks.floating_input("elu", x)
    a = _checks.hyperparameter("elu", "alpha", alpha, x)
    _checks.check_range("elu", "alpha", alpha)
    return _elu(x, a)


@jax.custom_jvp
def _celu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    xc, a = _widen(x, alpha)
    return jnp.where(xc > 0, xc, a * jnp.expm1(jnp.minimum(xc, 0) / a)).astype(x.dtype)


@functools.partial(_celu.defjvp, symbolic_zeros=True)
def _celu_jvp(primals, tangents):
    x, alpha = primals
    g, t_alpha = tangents
    y = _celu(x, alpha)
    xc, a = _widen(x, alpha)
    u = jnp.maximum(jnp.minimum(xc, 0) / a, _EXP_FLOOR)
    dx = dalpha = None
    if not is_zero(g):
        dx = scale(jnp.where(xc > 0, 1, jnp.exp(u)).astype(x.dtype), g)
    if not is_zero(t_alpha):
        # d/da [a (e^(x/a) - 1)] = (e^u - 1) - u e^u with u = x / a.
        d_a = jnp.where(xc > 0, 0, jnp.expm1(u) - u * jnp.exp(u))
        dalpha = scale_param(d_a.astype(x.dtype), t_alpha)
    if dx is None and dalpha is None:
        return y, jnp.zeros_like(y)
    return y, add_tangents(dx, dalpha)


def celu(x: ArrayLike, alpha: ArrayLike = 1.0) -> jax.Array:
    r"""Continuously differentiable ELU (Barron, 2017).

    .. math::
      \mathrm{celu}(x) = x \text{ for } x > 0, \quad
      \alpha (e^{x/\alpha} - 1) \text{ for } x \le 0.

    The derivative is 1 for :math:`x > 0` and :math:`e^{x/\alpha}` below (1 at 0, so it is
    continuous for every alpha). `alpha` (nonzero) is cast to `x.dtype` and differentiable.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      alpha: scale of the negative branch, a nonzero scalar (may be traced).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax.numpy as jnp, relujax
      >>> relujax.celu(jnp.array([-1.0, 0.0, 2.0]), alpha=2.0)
      Array([-0.78693867,  0.        ,  2.        ], dtype=float32)
    """
    x = _checks.floating_input("celu", x)
    a = _checks.hyperparameter("celu", "alpha", alpha, x)
    _checks.check_range("celu", "alpha", alpha, nonzero=True)
    return _celu(x, a)


@jax.custom_jvp
def _selu(x: jax.Array) -> jax.Array:
    (xc,) = _widen(x)
    neg = SELU_ALPHA * jnp.expm1(jnp.minimum(xc, 0))
    return (SELU_SCALE * jnp.where(xc > 0, xc, neg)).astype(x.dtype)


@_selu.defjvp
def _selu_jvp(primals, tangents):
    (x,), (g,) = primals, tangents
    (xc,) = _widen(x)
    d = SELU_SCALE * jnp.where(xc > 0, 1, SELU_ALPHA * jnp.exp(jnp.minimum(xc, 0)))
    return _selu(x), scale(d.astype(x.dtype), g)


def selu(x: ArrayLike) -> jax.Array:
    r"""Scaled ELU (Klambauer et al., 2017): :math:`\lambda\,\mathrm{elu}(x, \alpha)`.

    With :math:`\lambda` = 1.0507009873554805 and :math:`\alpha` = 1.6732632423543772. The
    derivative is :math:`\lambda` for :math:`x > 0` and :math:`\lambda \alpha e^x` for
    :math:`x \le 0`.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax.numpy as jnp, relujax
      >>> relujax.selu(jnp.array([-1.0, 0.0, 1.0]))
      Array([-1.1113307,  0.       ,  1.050701 ], dtype=float32)
    """
    return _selu(_checks.floating_input("selu", x))
