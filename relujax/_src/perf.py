"""relujax's fast pieces for models and training steps; :mod:`relujax.policy` decides where.

* :func:`conv_general_dilated`: a drop-in for ``jax.lax.conv_general_dilated`` (pass it as the
  ``conv_general_dilated=`` argument of ``flax.nnx.Conv``, or apply :func:`use_fast_conv` to a
  built model). 2-D convolutions without groups bind relujax's convolution primitive
  (``relujax._src.fastconv``): same values as ``lax``, derivatives of every order and ``vmap``,
  and on CPU a lowering of its own: canonical NHWC/HWIO convolutions everywhere (XLA:CPU runs
  the unusually labelled convolutions of ``lax``'s derivative inside a ``scan`` with a naive
  loop) and, where the policy allows, relujax's native kernels (``relujax._src.native``).
  On GPU/TPU it lowers to ``lax.conv_general_dilated`` itself.
* :func:`max_pool`: non-overlapping max pooling (window = stride, no padding: the book's
  ``F.max_pool2d(x, 2)``) as a reshape and a max, with an explicit derivative that sends each
  window's cotangent to its first maximum, as ``lax.reduce_window``'s does. XLA:CPU expands the
  stock derivative (``select_and_scatter``) into index iotas, a variadic reduce-window and a
  scatter, which is slower (``python -m benchmarks.conv_pieces``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from relujax._src import fastconv as _fastconv
from relujax._src import native as _native

__all__ = ["conv_general_dilated", "max_pool", "use_fast_conv"]

_NHWC = (0, 3, 1, 2)  # ConvDimensionNumbers spec of NHWC lhs/out: (batch, feature, spatial...)
_HWIO = (3, 2, 0, 1)  # ... of an HWIO kernel: (out feature, in feature, spatial...)


def _canonical_dims(dimension_numbers: Any, ndim: int) -> bool:
    if ndim != 4 or dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return (
            tuple(dimension_numbers.lhs_spec) == _NHWC
            and tuple(dimension_numbers.rhs_spec) == _HWIO
            and tuple(dimension_numbers.out_spec) == _NHWC
        )
    return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


def _explicit_padding(padding: Any, x_shape, w_shape, strides, rhs_dilation):
    if isinstance(padding, str):
        window = [(k - 1) * d + 1 for k, d in zip(w_shape[:2], rhs_dilation, strict=True)]
        return [tuple(p) for p in lax.padtype_to_pads(x_shape[1:3], window, strides, padding)]
    try:
        pads = [(int(lo), int(hi)) for lo, hi in padding]
    except (TypeError, ValueError):
        return None
    return pads if len(pads) == 2 else None


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    *,
    kernel_grad: str | None = None,
    native: bool | None = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated`` as relujax's convolution primitive, fast on CPU.

    Same signature and result as :func:`jax.lax.conv_general_dilated`. The primitive covers
    the convolutions of CNNs: 2-D, NHWC input, HWIO kernel, any strides, padding and
    dilations, no feature or batch groups, operands of one dtype; anything else is passed to
    ``lax.conv_general_dilated`` unchanged. ``jvp``, ``grad``, ``jacfwd``, Hessian-vector
    products and ``vmap`` work through it on every backend. Use it as
    ``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``; relujax's models do on CPU.

    ``kernel_grad`` (CPU, XLA's convolutions): ``"conv"`` (default) computes the kernel
    gradient as one convolution of the input with the cotangent; ``"split"`` as the sum of such
    convolutions over 16-image slices of the batch (the same products summed in another order),
    which XLA:CPU's default YNNPACK convolutions run faster; under
    :func:`relujax.policy.compiler_options` (Eigen convolutions) one convolution is faster.

    ``native`` (float32 convolutions on CPU, stride 1, or stride 2 rewritten as stride 1 over
    2x2 space-to-depth blocks): ``None`` (default) runs each piece (forward, input gradient,
    kernel gradient) that relujax's native kernels support with them when
    :func:`relujax.policy.native_convs` allows, the rest with XLA; ``False`` always XLA;
    ``True`` as ``None`` but raises when the native kernels are unavailable. Equal to ``lax``
    within float rounding; deterministic.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
        >>> dn = ("NHWC", "HWIO", "NHWC")
        >>> y = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
        >>> y.shape, float(y[0, 4, 4, 0])
        ((2, 8, 8, 4), 27.0)
    """
    if kernel_grad not in (None, "conv", "split"):
        raise ValueError(
            "conv_general_dilated: kernel_grad must be None, 'conv' or 'split', "
            f"got {kernel_grad!r}"
        )
    if native not in (None, True, False):
        raise ValueError(
            f"conv_general_dilated: native must be None, True or False, got {native!r}"
        )
    if native and not _native.available():
        raise ValueError(
            "conv_general_dilated: native=True but the native kernels are unavailable: "
            f"{_native.build_error() or 'unknown reason'}"
        )
    strides = tuple(int(s) for s in window_strides)
    ld = tuple(lhs_dilation or (1, 1))
    rd = tuple(rhs_dilation or (1, 1))
    canonical = _canonical_dims(dimension_numbers, lhs.ndim) and rhs.ndim == 4
    pads = _explicit_padding(padding, lhs.shape, rhs.shape, strides, rd) if canonical else None
    fast = (
        pads is not None
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and kwargs.get("out_sharding") is None
        and lhs.dtype == rhs.dtype
        and lhs.shape[3] == rhs.shape[2]
    )
    if not fast:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **kwargs,
        )
    conv = functools.partial(
        _fastconv.conv,
        precision=precision,
        kernel_grad=kernel_grad or "conv",
        native=native is not False,
        lhs_dilation=ld,
        rhs_dilation=rd,
    )
    if native is not False and _stride2_native(lhs, rhs, strides, pads, ld, rd):
        return _space_to_depth_conv(conv, lhs, rhs, pads)
    return conv(lhs, rhs, window_strides=strides, padding=pads)


def _s2d_shapes(x_shape, w_shape, pads):
    # Stride-2 convolution as a stride-1 one on 2x2 space-to-depth blocks: output size, and
    # blocks per side (p) and kernel taps per side (q) of the rewritten convolution.
    (_, h, w, _), (kh, kw, _, _) = x_shape, w_shape
    (lo_h, hi_h), (lo_w, hi_w) = pads
    ho, wo = (h + lo_h + hi_h - kh) // 2 + 1, (w + lo_w + hi_w - kw) // 2 + 1
    qh, qw = (kh + 1) // 2, (kw + 1) // 2
    return (ho, wo), (ho + qh - 1, wo + qw - 1), (qh, qw)


def _stride2_native(lhs, rhs, strides, pads, ld, rhs_dil) -> bool:
    """Whether a stride-2 convolution goes to the native kernels through space-to-depth.

    Where the policy runs native kernels (CPU), a 2-D stride-2 convolution without dilation
    and with a kernel wider than 1 is rewritten (:func:`_space_to_depth_conv`) when the native
    kernels take the rewritten stride-1 convolution; XLA:CPU runs stride-2 convolutions and
    their derivatives with batch/feature transposes around a dilated convolution.
    """
    from relujax._src import policy

    if strides != (2, 2) or ld != (1, 1) or rhs_dil != (1, 1) or min(rhs.shape[:2]) < 2:
        return False
    if not policy.native_convs():
        return False
    (ho, wo), (ph, pw), (qh, qw) = _s2d_shapes(lhs.shape, rhs.shape, pads)
    if min(ho, wo) < 1 or any(lo < 0 or hi < 0 for lo, hi in pads):
        return False
    n, _, _, c = lhs.shape
    kernel = (qh, qw, 4 * c, rhs.shape[3])
    return _native.supports((n, ph, pw, 4 * c), kernel, ((0, 0), (0, 0)), lhs.dtype)


def _space_to_depth_conv(conv, x: jax.Array, w: jax.Array, pads) -> jax.Array:
    """A stride-2 NHWC/HWIO convolution as a stride-1 ``conv`` over 2x2 blocks of pixels.

    With ``xp`` the zero-padded input, ``y[o] = sum_i xp[2o + i] w[i]`` per spatial axis;
    writing ``i = 2q + r`` (``r`` in {0, 1}) and ``X[p, r] = xp[2p + r]`` gives
    ``y[o] = sum_{q, r} X[o + q, r] w[2q + r]``: a stride-1 convolution of the blocks ``X``
    (4C channels) with a ``ceil(k / 2)``-tap kernel (the taps past ``k`` zero). The same sums
    up to the zero taps (float rounding aside); its derivatives are those of the stride-1
    convolution and of the reshapes. Costs ``(2 ceil(k/2) / k)^2`` times the multiply-adds.
    """
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    (lo_h, _), (lo_w, _) = pads
    _, (ph, pw), (qh, qw) = _s2d_shapes(x.shape, w.shape, pads)
    # Pad (or crop: negative high padding) to exactly 2p rows and columns.
    rows, cols = (lo_h, 2 * ph - h - lo_h, 0), (lo_w, 2 * pw - wd - lo_w, 0)
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), rows, cols, (0, 0, 0)))
    xs = xp.reshape(n, ph, 2, pw, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, ph, pw, 4 * c)
    wp = jnp.pad(w, ((0, 2 * qh - kh), (0, 2 * qw - kw), (0, 0), (0, 0)))
    ws = wp.reshape(qh, 2, qw, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(qh, qw, 4 * c, o)
    return conv(xs, ws, window_strides=(1, 1), padding=((0, 0), (0, 0)))


def use_fast_conv(model: Any, *, kernel_grad: str | None = None, native: bool | None = None) -> Any:
    """Makes every ``nnx.Conv`` inside ``model`` use :func:`conv_general_dilated`; returns it.

    For models built elsewhere; new code can pass ``conv_general_dilated=conv_general_dilated``
    to ``nnx.Conv`` directly. Parameters and results are unchanged. ``kernel_grad`` and
    ``native`` are passed on to :func:`conv_general_dilated` (``None``: its defaults).

    Example:
        >>> from flax import nnx
        >>> conv = use_fast_conv(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)))
        >>> conv.conv_general_dilated is conv_general_dilated
        True
    """
    from flax import nnx

    options = {k: v for k, v in (("kernel_grad", kernel_grad), ("native", native)) if v is not None}
    fn = functools.partial(conv_general_dilated, **options) if options else conv_general_dilated
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Conv):
            module.conv_general_dilated = fn
    return model


def _windows(x: jax.Array, k: int) -> jax.Array:
    # (N, H, W, C) -> (N, H//k, k, W//k, k, C), floor mode: rows/columns past the last whole
    # window are dropped, as lax.reduce_window and F.max_pool2d(ceil_mode=False) do.
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    return x[:, : ho * k, : wo * k].reshape(n, ho, k, wo, k, c)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, k: int) -> jax.Array:
    return _windows(x, k).max((2, 4))


@_max_pool.defjvp
def _max_pool_jvp(k, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _max_pool(x, k)
    xw, tw = _windows(x, k), _windows(t, k)
    zero = jnp.zeros((), t.dtype)
    taken = dt = None
    # Window positions in row-major order; each output takes the tangent of the first position
    # equal to the max (a NaN counts as the max, since the max is then NaN).
    for i in range(k):
        for j in range(k):
            xi = xw[:, :, i, :, j]
            hit = (xi == y) | jnp.isnan(xi)
            pick = hit if taken is None else hit & ~taken
            taken = hit if taken is None else taken | hit
            v = jnp.where(pick, tw[:, :, i, :, j], zero)
            dt = v if dt is None else dt + v
    return y, dt


def max_pool(x: jax.Array, window: int) -> jax.Array:
    """Max pooling of NHWC ``x`` over ``window`` x ``window`` tiles with stride ``window``.

    Equal to ``flax.nnx.max_pool(x, (window, window), strides=(window, window))`` (floor mode:
    a partial last row or column of windows is dropped), derivatives included: each window's
    cotangent goes to its first maximal element in row-major order, as with
    ``lax.reduce_window``; forward and reverse mode. One difference: in a window holding a NaN
    (output NaN) the cotangent goes to the first NaN, as in PyTorch, where ``lax`` sends it to
    the largest non-NaN element. Faster on XLA:CPU (module docstring).

    Example:
        >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
        >>> max_pool(x, 2)[0, :, :, 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """
    if x.ndim != 4:
        raise ValueError(f"max_pool: x must be NHWC (4-D), got shape {x.shape}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"max_pool: window must be a positive int, got {window!r}")
    if window > min(x.shape[1:3]):
        raise ValueError(f"max_pool: window {window} is larger than the input {x.shape[1:3]}")
    return _max_pool(x, window)
