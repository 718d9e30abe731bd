"""Backend-specific speed choices for relujax models and training steps.

What is here and why (measured by ``benchmarks/``, figures in ``benchmarks/RESULTS.md``):

* :func:`conv_general_dilated`: a drop-in for ``jax.lax.conv_general_dilated`` (pass it as the
  ``conv_general_dilated=`` argument of ``flax.nnx.Conv``, or apply :func:`use_fast_conv` to a
  built model) whose backward pass is written out in canonical NHWC/HWIO form: the input
  gradient is a forward convolution of the cotangent with the flipped kernel, the kernel
  gradient a forward convolution of the input and the cotangent with batch and feature roles
  swapped (on CPU, by default, a sum of such convolutions over 16-image slices of the batch,
  which XLA:CPU's YNNPACK runs 1.5x faster than one convolution contracting 64 images: NetResDeep
  and resnet20 steps 1.08-1.18x faster). Forward and input gradient are bit-identical to
  ``lax``'s, the kernel gradient equal to float rounding. Why: the automatic transpose rule emits
  convolutions with unusual dimension labels (``b01f_01oi``, ``f01b_i01o->01bf``); outside a
  loop XLA:CPU's layout pass inserts transposes and YNNPACK runs them, but inside a
  ``scan``/``while`` body it cannot, and XLA falls back to its naive convolution loop: a scanned
  NetResDeep step was 60-100x slower than the unrolled one (jaxlib 0.10.2). With this rule the
  scanned stack runs at roughly the unrolled speed and compiles in constant time in depth.
* :func:`scan_blocks_by_default`: unrolled or scanned stacks, per backend.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "conv_general_dilated",
    "default_backend",
    "scan_blocks_by_default",
    "use_fast_conv",
]

_NHWC = (0, 3, 1, 2)  # ConvDimensionNumbers spec of NHWC lhs/out: (batch, feature, spatial...)
_HWIO = (3, 2, 0, 1)  # ... of an HWIO kernel: (out feature, in feature, spatial...)


def default_backend() -> str:
    """The platform of JAX's default backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    platform = jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def scan_blocks_by_default(backend: str | None = None) -> bool:
    """Whether a deep stack of identical blocks should be scanned (``True``) or unrolled.

    On CPU, unrolled. Scanning a stack of convolutions on CPU needs :func:`conv_general_dilated`
    in the blocks (without it the backward is 60-100x slower); with it, per step, NetResDeep's
    unrolled step was 1.15-1.5x faster than its scanned one, while the CIFAR ResNets' scanned
    steps were 1.2-1.85x faster than unrolled (benchmarks/RESULTS.md, a loaded 2-core VM).
    A scanned stack compiles in constant time in depth (2-10 s vs 10-100 s unrolled at 100-200
    blocks), which decides for tests, benchmarks and short runs. Elsewhere (GPU/TPU), scan.

    Example:
        >>> scan_blocks_by_default("cpu"), scan_blocks_by_default("gpu")
        (False, True)
    """
    backend = default_backend() if backend is None else backend
    return backend != "cpu"


def _canonical_dims(dimension_numbers: Any, ndim: int) -> bool:
    if ndim != 4:
        return False
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return (
            tuple(dimension_numbers.lhs_spec) == _NHWC
            and tuple(dimension_numbers.rhs_spec) == _HWIO
            and tuple(dimension_numbers.out_spec) == _NHWC
        )
    return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


def _explicit_padding(padding: Any, x_shape, w_shape, strides) -> list[tuple[int, int]] | None:
    if isinstance(padding, str):
        return [tuple(p) for p in lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding)]
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
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated`` with a backward pass that XLA:CPU runs fast inside loops.

    Same signature and result as :func:`jax.lax.conv_general_dilated`. The fast path covers
    the convolutions of CNNs: 2-D, NHWC input, HWIO kernel, any strides and padding, no
    dilation, no feature groups; anything else is passed to ``lax.conv_general_dilated``
    unchanged. Use it as ``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``.

    ``kernel_grad`` picks how the kernel gradient is computed: ``"conv"``, one convolution of
    the input with the cotangent (batch and feature roles swapped, the batch contracted);
    ``"split"``, the sum of such convolutions over 16-image slices of the batch (the same
    products summed in another order: equal to ``lax`` within float rounding), which XLA:CPU's
    YNNPACK runs 1.5x faster than one convolution contracting 64 images (used when the batch and
    the output channels exceed 16, else one convolution); ``None`` (default): ``"split"`` on
    CPU, ``"conv"`` elsewhere.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
        >>> dn = ("NHWC", "HWIO", "NHWC")
        >>> y = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
        >>> y.shape, float(y[0, 4, 4, 0])
        ((2, 8, 8, 4), 27.0)
    """
    strides = tuple(int(s) for s in window_strides)
    pads = _explicit_padding(padding, lhs.shape, rhs.shape, strides) if lhs.ndim == 4 else None
    fast = (
        _canonical_dims(dimension_numbers, lhs.ndim)
        and pads is not None
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and kwargs.get("out_sharding") is None
        and lhs.dtype == rhs.dtype
    )
    if kernel_grad not in (None, "conv", "split"):
        raise ValueError(
            "conv_general_dilated: kernel_grad must be None, 'conv' or 'split', "
            f"got {kernel_grad!r}"
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
    if kernel_grad is None:
        kernel_grad = "split" if default_backend() == "cpu" else "conv"
    return _conv_nhwc_p(lhs, rhs, strides, tuple(pads), precision, kernel_grad)


def _forward(x, w, strides, pads, precision, kernel_grad="conv"):
    del kernel_grad
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision
    )


def _fwd(x, w, strides, pads, precision, kernel_grad):
    return _forward(x, w, strides, pads, precision), (x, w)


_SPLIT = 16  # batch elements per kernel-gradient piece (kernel_grad="split")


def _kernel_grad(x, g, strides, pads, precision, kernel_grad):
    # A forward convolution with batch and feature roles swapped (the input as (Ci, H, W, N),
    # the cotangent as an (Ho, Wo, N, Co) kernel dilated by the stride), which is what XLA does
    # outside loops, but here with canonical dimension labels everywhere. "split" sums the
    # convolutions of 16-image slices of the batch, laid out by one transpose each for x and g.
    def conv(lhs, rhs):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            (1, 1),
            pads,
            rhs_dilation=strides,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision,
        )

    n, co = x.shape[0], g.shape[-1]
    # With <= 16 output channels the pieces would leave YNNPACK for Eigen, which is slower here
    # (resnet20's 16-channel stage: 6.2 vs 4.5 ms); keep one convolution then.
    if kernel_grad == "conv" or n <= _SPLIT or co <= _SPLIT:
        return conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3))
    pieces = -(-n // _SPLIT)
    if pieces * _SPLIT != n:  # zero images add nothing to the kernel gradient
        extra = ((0, pieces * _SPLIT - n), (0, 0), (0, 0), (0, 0))
        x, g = jnp.pad(x, extra), jnp.pad(g, extra)
    lhs = x.reshape(pieces, _SPLIT, *x.shape[1:]).transpose(0, 4, 2, 3, 1)  # (P, Ci, H, W, 16)
    rhs = g.reshape(pieces, _SPLIT, *g.shape[1:]).transpose(0, 2, 3, 1, 4)  # (P, Ho, Wo, 16, Co)
    return functools.reduce(operator.add, [conv(lhs[i], rhs[i]) for i in range(pieces)])


def _bwd(strides, pads, precision, kernel_grad, res, g):
    x, w = res
    kh, kw = w.shape[0], w.shape[1]
    out_hw = g.shape[1:3]
    # Input gradient: the cotangent, dilated by the stride, convolved with the kernel flipped in
    # space and with in/out swapped; written as a forward NHWC/HWIO convolution.
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx_pads = []
    for n, k, s, o, (lo, _) in zip(x.shape[1:3], (kh, kw), strides, out_hw, pads, strict=True):
        before = k - 1 - lo
        after = n - 1 - (o - 1) * s + lo
        dx_pads.append((before, after))
    dx = lax.conv_general_dilated(
        g,
        w_t,
        (1, 1),
        dx_pads,
        lhs_dilation=strides,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )
    dw = _kernel_grad(x, g, strides, pads, precision, kernel_grad)
    dw = dw[:, :kh, :kw, :].transpose(1, 2, 0, 3)
    dw = dw.astype(w.dtype)
    return dx.astype(x.dtype), dw


_conv_nhwc_p = jax.custom_vjp(_forward, nondiff_argnums=(2, 3, 4, 5))
_conv_nhwc_p.defvjp(_fwd, _bwd)


def use_fast_conv(model: Any, *, kernel_grad: str | None = None) -> Any:
    """Makes every ``nnx.Conv`` inside ``model`` use :func:`conv_general_dilated`; returns it.

    For models built elsewhere; new code can pass ``conv_general_dilated=conv_general_dilated``
    to ``nnx.Conv`` directly. Parameters and results are unchanged. ``kernel_grad`` is passed
    on to :func:`conv_general_dilated` (``None``: its per-backend default).

    Example:
        >>> from flax import nnx
        >>> conv = use_fast_conv(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)))
        >>> conv.conv_general_dilated is conv_general_dilated
        True
    """
    from flax import nnx

    fn = (
        conv_general_dilated
        if kernel_grad is None
        else functools.partial(conv_general_dilated, kernel_grad=kernel_grad)
    )
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Conv):
            module.conv_general_dilated = fn
    return model
