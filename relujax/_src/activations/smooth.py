"""The smooth activations: gelu (exact and tanh forms), silu, softplus.

Each keeps only its derivative, in `x.dtype`, for the backward pass. Values and derivatives are
written so that they keep relative accuracy in the negative tail and have the right limits at
+-inf instead of `inf * 0 = nan`; float16/bfloat16 are computed in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from relujax._src.activations import _checks
from relujax._src.activations._rules import add_tangents, compute_dtype, is_zero, scale, scale_param

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715
# Every sigmoid below saturates to exactly 0 or 1 well before |x| = _SATURATED (in float64 too),
# so clipping there changes nothing but keeps x**2 finite and inf * 0 out of the derivatives.
_SATURATED = 1.0e3


def _widen(x: jax.Array) -> jax.Array:
    return x.astype(compute_dtype(x.dtype))


def _times(x: jax.Array, factor: jax.Array) -> jax.Array:
    """`x * factor` for a factor that tends to 0 as x -> -inf: the limit 0 at x = -inf."""
    return jnp.where(jnp.isneginf(x), jnp.zeros((), x.dtype), x * factor)


# --- gelu ---------------------------------------------------------------------------------------


def _phi_cdf(x: jax.Array) -> jax.Array:
    return 0.5 * lax.erfc(-x / math.sqrt(2.0))


def _phi_pdf(x: jax.Array) -> jax.Array:
    """The Gaussian density written as the exponential inside `lax.erfc(-x / sqrt 2)`, so that a
    fused forward+backward evaluates one exponential, not two (XLA merges the common term)."""
    z = -x / math.sqrt(2.0)
    return _INV_SQRT_2PI * jnp.exp(-(z * z))


def _tanh_z2(x: jax.Array) -> jax.Array:
    """2 z with z = sqrt(2/pi) (x + 0.044715 x^3), the argument of the tanh form's sigmoid."""
    return 2.0 * _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)


def _sigmoid_pair(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sigma(v) and sigma(-v) = 1 - sigma(v) from ONE sigmoid, both to full relative accuracy.

    With t = sigma(-|v|) <= 1/2 the other one is 1 - t >= 1/2 (no cancellation), so a fused
    forward+backward evaluates one exponential and one division where it evaluated two each.
    """
    t = jax.nn.sigmoid(-jnp.abs(v))
    pos = v >= 0
    return jnp.where(pos, 1 - t, t), jnp.where(pos, t, 1 - t)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _gelu(x: jax.Array, approximate: bool) -> jax.Array:
    xc = _widen(x)
    factor = _sigmoid_pair(_tanh_z2(xc))[0] if approximate else _phi_cdf(xc)
    return _times(xc, factor).astype(x.dtype)


@_gelu.defjvp
def _gelu_jvp(approximate, primals, tangents):
    (x,), (g,) = primals, tangents
    xc = _widen(x)
    xl = jnp.clip(xc, -_SATURATED, _SATURATED)
    if approximate:
        # d/dx [x sigmoid(2z)] = s + x s (1 - s) 2 z', with 1 - s computed as sigmoid(-2z).
        sig, one_minus = _sigmoid_pair(_tanh_z2(xl))
        dz2 = 2.0 * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * xl * xl)
        d = sig * (1.0 + xl * one_minus * dz2)
    else:
        d = _phi_cdf(xc) + xl * _phi_pdf(xc)
    return _gelu(x, approximate), scale(d.astype(x.dtype), g)


def gelu(x: ArrayLike, approximate: bool = False) -> jax.Array:
    r"""Gaussian error linear unit (Hendrycks and Gimpel, 2016).

    .. math::
      \mathrm{gelu}(x) = x\,\Phi(x) = \tfrac{x}{2}\,\mathrm{erfc}(-x/\sqrt{2})

    with the exact Gaussian CDF by default (as PyTorch; `jax.nn.gelu` defaults to the tanh
    form). `approximate=True` uses :math:`x\,\sigma(2z)`,
    :math:`z = \sqrt{2/\pi}(x + 0.044715 x^3)`, which equals the usual
    :math:`\tfrac{x}{2}(1 + \tanh z)` without its cancellation: gelu(-5) is -2.3e-7, not -0.
    Derivatives: :math:`\Phi(x) + x\varphi(x)` (exact form), 0 at -inf and 1 at +inf.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      approximate: a Python bool, False for the erf form, True for the tanh form.

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax.numpy as jnp, relujax
      >>> relujax.gelu(jnp.array([-1.0, 0.0, 1.0]))
      Array([-0.15865527,  0.        ,  0.8413447 ], dtype=float32)
      >>> relujax.gelu(jnp.array([-5.0]), approximate=True)
      Array([-2.2917972e-07], dtype=float32)
    """
    x = _checks.floating_input("gelu", x)
    if not isinstance(approximate, bool):
        raise TypeError(
            f"relujax.gelu: expected approximate to be a Python bool (False: erf form, True: "
            f"tanh form), got {type(approximate).__name__}."
        )
    return _gelu(x, approximate)


# --- silu ---------------------------------------------------------------------------------------


def _silu_parts(x: jax.Array):
    xc = _widen(x)
    return xc, *_sigmoid_pair(xc)


@jax.custom_jvp
def _silu(x: jax.Array) -> jax.Array:
    xc, sig, _ = _silu_parts(x)
    return _times(xc, sig).astype(x.dtype)


@_silu.defjvp
def _silu_jvp(primals, tangents):
    (x,), (g,) = primals, tangents
    xc, sig, one_minus = _silu_parts(x)
    xl = jnp.clip(xc, -_SATURATED, _SATURATED)
    d = sig * (1.0 + xl * one_minus)
    return _times(xc, sig).astype(x.dtype), scale(d.astype(x.dtype), g)


def silu(x: ArrayLike) -> jax.Array:
    r"""Sigmoid linear unit (swish), :math:`x\,\sigma(x)`.

    The derivative :math:`\sigma(x)(1 + x\,\sigma(-x))` has the limits 0 at -inf and 1 at
    +inf (`jax.nn.silu` gives nan there).

    Args:
      x: floating array (float16, bfloat16, float32 or float64).

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax, jax.numpy as jnp, relujax
      >>> relujax.silu(jnp.array([-1.0, 0.0, 1.0]))
      Array([-0.26894143,  0.        ,  0.7310586 ], dtype=float32)
      >>> jax.vmap(jax.grad(relujax.silu))(jnp.array([-jnp.inf, jnp.inf]))
      Array([-0.,  1.], dtype=float32)
    """
    return _silu(_checks.floating_input("silu", x))


# --- softplus -----------------------------------------------------------------------------------


def _softplus_parts(x, beta, threshold):
    cd = compute_dtype(x.dtype)
    xc, b, t = (v.astype(x.dtype).astype(cd) for v in (x, beta, threshold))
    bx = b * xc
    linear = bx > t
    e = jnp.exp(-jnp.abs(bx))  # in (0, 1]: shared by the value and the derivative
    sp = (jnp.maximum(bx, 0) + jnp.log1p(e)) / b
    return xc, b, bx, linear, sp, e


def _sigmoid_from(bx, e):
    """sigmoid(bx) from e = exp(-|bx|): 1 / (1 + e) for bx >= 0, e / (1 + e) below.

    Saves the second exponential of a fused softplus forward+backward; no overflow, since
    e <= 1.
    """
    return jnp.where(bx >= 0, jnp.ones_like(e), e) / (1 + e)


@jax.custom_jvp
def _softplus(x: jax.Array, beta: jax.Array, threshold: jax.Array) -> jax.Array:
    xc, _, _, linear, sp, _ = _softplus_parts(x, beta, threshold)
    return jnp.where(linear, xc, sp).astype(x.dtype)


@functools.partial(_softplus.defjvp, symbolic_zeros=True)
def _softplus_jvp(primals, tangents):
    x, beta, threshold = primals
    g, t_beta, _ = tangents  # the threshold only moves a switch: derivative 0
    y = _softplus(x, beta, threshold)
    xc, b, bx, linear, sp, e = _softplus_parts(x, beta, threshold)
    sig = _sigmoid_from(bx, e)
    dx = dbeta = None
    if not is_zero(g):
        dx = scale(jnp.where(linear, 1, sig).astype(x.dtype), g)
    if not is_zero(t_beta):
        # d/db [softplus(b x) / b] = (x sigmoid(b x) - softplus(b x) / b) / b
        d_b = jnp.where(linear, 0, (_times(xc, sig) - sp) / b)
        dbeta = scale_param(d_b.astype(x.dtype), t_beta)
    if dx is None and dbeta is None:
        return y, jnp.zeros_like(y)
    return y, add_tangents(dx, dbeta)


def softplus(x: ArrayLike, beta: ArrayLike = 1.0, threshold: ArrayLike = 20.0) -> jax.Array:
    r"""Softplus, :math:`\tfrac{1}{\beta}\log(1 + e^{\beta x})`, linear above a threshold.

    As PyTorch: where :math:`\beta x >` `threshold` the result is `x` and the derivative 1;
    elsewhere the derivative is :math:`\sigma(\beta x)` and the second derivative
    :math:`\beta\,\sigma(\beta x)(1 - \sigma(\beta x))`. `beta` (positive) is cast to `x.dtype`
    and differentiable; `threshold` is not differentiated.

    Args:
      x: floating array (float16, bfloat16, float32 or float64).
      beta: positive scalar sharpness (may be traced).
      threshold: scalar; beta * x above it is treated as linear.

    Returns:
      An array of the shape and dtype of `x`.

    Example:
      >>> import jax.numpy as jnp, relujax
      >>> relujax.softplus(jnp.array([-1.0, 0.0, 30.0]))
      Array([ 0.3132617,  0.6931472, 30.       ], dtype=float32)
    """
    x = _checks.floating_input("softplus", x)
    b = _checks.hyperparameter("softplus", "beta", beta, x)
    t = _checks.hyperparameter("softplus", "threshold", threshold, x)
    _checks.check_range("softplus", "beta", beta, positive=True)
    _checks.check_range("softplus", "threshold", threshold)
    return _softplus(x, b, t)
