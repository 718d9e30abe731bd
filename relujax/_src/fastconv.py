"""relujax's 2-D convolution as a JAX primitive: lax's semantics, a CPU lowering of its own.

``conv_p`` computes what ``lax.conv_general_dilated`` computes for 4-D operands without feature
or batch groups (any dimension numbers, strides, padding and dilations). It has its own
abstract evaluation, JVP (it is bilinear), transpose and batching rules, so ``jvp``, ``grad``,
``jacfwd``, Hessian-vector products and ``vmap`` work through it and through anything built on
it (a scanned stack of blocks included). Its derivatives are ``conv_p`` again, as ``lax``'s
are ``conv_general_dilated``: the input gradient a convolution of the cotangent with the
flipped kernel, the kernel gradient a convolution of the input with the cotangent, batch and
feature roles swapped.

Why a primitive: its lowering can differ per platform.

* On CPU, every operand is first laid out in canonical NHWC/HWIO form (explicit transposes),
  so XLA:CPU sees only canonical convolutions, which YNNPACK/Eigen run fast even inside a
  ``scan``/``while`` body (the unusual dimension labels of ``lax``'s own derivative fall back
  to a naive loop there). Where :func:`relujax._src.policy.native_convs` allows it, stride-1
  float32 forward/input-gradient convolutions and kernel gradients run relujax's native
  kernels (``relujax._src.native``) instead; they need no transposed copies at all.
  ``kernel_grad="split"`` computes kernel gradients as a sum over 16-image slices of the batch
  (faster under YNNPACK's convolutions, XLA:CPU's default compile options).
* On every other platform it lowers to ``lax.conv_general_dilated`` with the same parameters:
  the same HLO as ``lax``'s, derivatives included, and no custom call.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from relujax._src import native as _native
from relujax._src import policy as _policy

__all__ = ["CANONICAL", "conv", "conv_p"]

ConvDN = lax.ConvDimensionNumbers
# (batch, feature, spatial...) axes of NHWC / (out, in, spatial...) of HWIO.
CANONICAL = ConvDN((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
_SPLIT = 16  # batch elements per kernel-gradient piece (kernel_grad="split")

conv_p = Primitive("relujax.conv_general_dilated")


def _spec_t(spec):
    return (spec[1], spec[0], *spec[2:])


# The kernel gradient of a canonical convolution, as conv_p's rhs transpose writes it: input x
# (NHWC) read as (feature N, batch C), cotangent g (NHWC) as a kernel, out feature O, in
# feature N; the result is the HWIO kernel.
_KERNEL_GRAD = ConvDN(
    _spec_t(CANONICAL.lhs_spec), _spec_t(CANONICAL.out_spec), _spec_t(CANONICAL.rhs_spec)
)


def conv(
    lhs: jax.Array,
    rhs: jax.Array,
    *,
    window_strides,
    padding,
    lhs_dilation=(1, 1),
    rhs_dilation=(1, 1),
    dimension_numbers: ConvDN = CANONICAL,
    precision: Any = None,
    kernel_grad: str = "conv",
    native: bool = True,
) -> jax.Array:
    """Binds :data:`conv_p`: ``lax.conv_general_dilated`` of 4-D ``lhs``/``rhs``, no groups.

    ``padding`` is explicit ``((lo, hi), (lo, hi))``; ``native=False`` keeps XLA's
    convolutions on CPU. Operands must share a dtype.
    """
    return conv_p.bind(
        lhs,
        rhs,
        window_strides=tuple(int(s) for s in window_strides),
        padding=tuple((int(lo), int(hi)) for lo, hi in padding),
        lhs_dilation=tuple(int(d) for d in lhs_dilation),
        rhs_dilation=tuple(int(d) for d in rhs_dilation),
        dimension_numbers=ConvDN(*(tuple(int(a) for a in s) for s in dimension_numbers)),
        precision=precision,
        kernel_grad=kernel_grad,
        native=bool(native),
    )


def _out_shape(lhs_shape, rhs_shape, *, window_strides, padding, lhs_dilation, rhs_dilation,
               dimension_numbers):  # fmt: skip
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    spatial = []
    for i in range(2):
        size = max(0, (lhs_shape[lhs_spec[2 + i]] - 1) * lhs_dilation[i] + 1)
        window = (rhs_shape[rhs_spec[2 + i]] - 1) * rhs_dilation[i] + 1
        lo, hi = padding[i]
        spatial.append(max(0, (size + lo + hi - window) // window_strides[i] + 1))
    shape = [0] * 4
    shape[out_spec[0]] = lhs_shape[lhs_spec[0]]
    shape[out_spec[1]] = rhs_shape[rhs_spec[0]]
    shape[out_spec[2]], shape[out_spec[3]] = spatial
    return tuple(shape)


def _abstract_eval(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, **_):  # fmt: skip
    if lhs.dtype != rhs.dtype or lhs.ndim != 4 or rhs.ndim != 4:
        raise TypeError(
            f"relujax conv: expected two 4-D operands of one dtype, got {lhs.dtype}{lhs.shape} "
            f"and {rhs.dtype}{rhs.shape}"
        )
    if lhs.shape[dimension_numbers.lhs_spec[1]] != rhs.shape[dimension_numbers.rhs_spec[1]]:
        raise TypeError(
            f"relujax conv: input features of lhs {lhs.shape} and rhs {rhs.shape} differ "
            f"(dimension numbers {dimension_numbers})"
        )
    shape = _out_shape(
        lhs.shape,
        rhs.shape,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
    )
    return jax.core.ShapedArray(shape, lhs.dtype)


def _lax_conv(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
              dimension_numbers, precision, **_):  # fmt: skip
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        precision=precision,
    )


def _canonical(lhs, rhs, dn):
    """``lhs`` as NHWC and ``rhs`` as HWIO, and the permutation that lays NHWC out as ``dn``."""
    lhs_spec, rhs_spec, out_spec = dn
    x = lhs.transpose(lhs_spec[0], lhs_spec[2], lhs_spec[3], lhs_spec[1])
    k = rhs.transpose(rhs_spec[2], rhs_spec[3], rhs_spec[1], rhs_spec[0])
    perm = [0] * 4
    for role, axis in zip((0, 3, 1, 2), out_spec, strict=True):
        perm[axis] = role
    return x, k, tuple(perm)


def _transpose_if(y, perm):
    return y if perm == (0, 1, 2, 3) else y.transpose(perm)


def _split_kernel_grad(x, g, precision, **params):
    # The canonical kernel gradient, x as (C, H, W, N) and g as (Ho, Wo, N, O): the sum of the
    # convolutions of 16-image slices (zero images add nothing).
    n = x.shape[3]
    pieces = -(-n // _SPLIT)
    if pieces * _SPLIT != n:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pieces * _SPLIT - n)))
        g = jnp.pad(g, ((0, 0), (0, 0), (0, pieces * _SPLIT - n), (0, 0)))
    parts = [
        lax.conv_general_dilated(
            x[..., i * _SPLIT : (i + 1) * _SPLIT],
            g[:, :, i * _SPLIT : (i + 1) * _SPLIT],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision,
            **params,
        )
        for i in range(pieces)
    ]
    return functools.reduce(operator.add, parts)


def _cpu_impl(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
              dimension_numbers, precision, kernel_grad, native):  # fmt: skip
    unit = window_strides == lhs_dilation == rhs_dilation == (1, 1)
    use_native = native and unit and _policy.native_convs("cpu")
    if use_native and dimension_numbers == _KERNEL_GRAD:
        kh, kw = _out_shape(
            lhs.shape,
            rhs.shape,
            window_strides=window_strides,
            padding=padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
        )[:2]
        k_shape = (kh, kw, lhs.shape[3], rhs.shape[3])
        if _native.supports(lhs.shape, k_shape, padding, lhs.dtype):
            return _native.conv_kernel_grad(lhs, rhs, (kh, kw), padding)
    x, k, perm = _canonical(lhs, rhs, dimension_numbers)
    if use_native and _native.supports(x.shape, k.shape, padding, x.dtype):
        return _transpose_if(_native.conv(x, k, padding), perm)
    params = dict(
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
    )
    if kernel_grad == "split" and dimension_numbers == _KERNEL_GRAD:
        if x.shape[3] > _SPLIT and k.shape[3] > _SPLIT:
            return _transpose_if(_split_kernel_grad(x, k, precision, **params), perm)
    y = lax.conv_general_dilated(
        x, k, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision, **params
    )
    return _transpose_if(y, perm)


def _impl(lhs, rhs, **params):
    # Eager binding runs the compiled primitive (one cached jit per parameter set).
    return _eager(tuple(sorted(params.items())))(lhs, rhs)


@functools.cache
def _eager(items):
    params = dict(items)
    return jax.jit(lambda a, b: conv_p.bind(a, b, **params))


def _vjp_lhs_padding(in_shape, window, strides, out_shape, padding, lhs_dil, rhs_dil):
    pads = []
    for n, k, s, o, (lo, _), ld, rd in zip(
        in_shape, window, strides, out_shape, padding, lhs_dil, rhs_dil, strict=True
    ):
        n, k, o = (n - 1) * ld + 1, (k - 1) * rd + 1, (o - 1) * s + 1
        before = k - lo - 1
        pads.append((before, n + k - 1 - o - before))
    return tuple(pads)


def _vjp_rhs_padding(in_shape, window, strides, out_shape, padding, lhs_dil, rhs_dil):
    pads = []
    for n, k, s, o, (lo, _), ld, rd in zip(
        in_shape, window, strides, out_shape, padding, lhs_dil, rhs_dil, strict=True
    ):
        n, k, o = (n - 1) * ld + 1, (k - 1) * rd + 1, (o - 1) * s + 1
        pads.append((lo, o - n + k - lo - 1))
    return tuple(pads)


def _spatial(shape, spec):
    return [shape[d] for d in spec[2:]]


def _transpose_lhs(g, lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, **rest):  # fmt: skip
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    pads = _vjp_lhs_padding(
        _spatial(lhs.aval.shape, lhs_spec),
        _spatial(rhs.shape, rhs_spec),
        window_strides,
        _spatial(g.shape, out_spec),
        padding,
        lhs_dilation,
        rhs_dilation,
    )
    return conv(
        g,
        lax.rev(rhs, tuple(rhs_spec[2:])),
        window_strides=lhs_dilation,
        padding=pads,
        lhs_dilation=window_strides,
        rhs_dilation=rhs_dilation,
        dimension_numbers=ConvDN(out_spec, _spec_t(rhs_spec), lhs_spec),
        **rest,
    )


def _transpose_rhs(g, lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, **rest):  # fmt: skip
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    pads = _vjp_rhs_padding(
        _spatial(lhs.shape, lhs_spec),
        _spatial(rhs.aval.shape, rhs_spec),
        window_strides,
        _spatial(g.shape, out_spec),
        padding,
        lhs_dilation,
        rhs_dilation,
    )
    return conv(
        lhs,
        g,
        window_strides=rhs_dilation,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=window_strides,
        dimension_numbers=ConvDN(_spec_t(lhs_spec), _spec_t(out_spec), _spec_t(rhs_spec)),
        **rest,
    )


def _batch(args, dims, **params):
    lhs, rhs = args
    ld, rd = dims
    if rd is not None:
        # A batch of kernels: lax's batching rule (feature groups), lax's convolution.
        f = functools.partial(_lax_conv, **params)
        return jax.vmap(f, in_axes=(ld, rd))(lhs, rhs), 0
    # A batch of inputs: folded into the convolution's own batch axis.
    b = params["dimension_numbers"].lhs_spec[0]
    lhs = jnp.moveaxis(lhs, ld, b)
    lhs = lhs.reshape(*lhs.shape[:b], lhs.shape[b] * lhs.shape[b + 1], *lhs.shape[b + 2 :])
    out = conv_p.bind(lhs, rhs, **params)
    o = params["dimension_numbers"].out_spec[0]
    size = args[0].shape[ld]
    return out.reshape(*out.shape[:o], size, out.shape[o] // size, *out.shape[o + 1 :]), o


conv_p.def_impl(_impl)
conv_p.def_abstract_eval(_abstract_eval)
ad.defbilinear(conv_p, _transpose_lhs, _transpose_rhs)
batching.primitive_batchers[conv_p] = _batch
mlir.register_lowering(conv_p, mlir.lower_fun(_lax_conv, multiple_results=False))
mlir.register_lowering(conv_p, mlir.lower_fun(_cpu_impl, multiple_results=False), platform="cpu")
