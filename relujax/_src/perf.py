"""Backend-specific speed choices for relujax models and training steps.

What is here and why (measured by ``benchmarks/``, figures in ``benchmarks/RESULTS.md``):

* :func:`conv_general_dilated`: a drop-in for ``jax.lax.conv_general_dilated`` (pass it as the
  ``conv_general_dilated=`` argument of ``flax.nnx.Conv``, or apply :func:`use_fast_conv` to a
  built model) whose backward pass is written out in canonical NHWC/HWIO form: the input
  gradient is a forward convolution of the cotangent with the flipped kernel, the kernel
  gradient a forward convolution of the input and the cotangent with batch and feature roles
  swapped (optionally, ``kernel_grad="split"``, a sum of such convolutions over 16-image slices
  of the batch, which XLA:CPU's YNNPACK runs 1.5x faster than one convolution contracting 64
  images; with :func:`compiler_options`' Eigen convolutions one convolution is best). Forward
  and input gradient are bit-identical to ``lax``'s, the kernel gradient equal to float
  rounding. Why: the automatic transpose rule emits
  convolutions with unusual dimension labels (``b01f_01oi``, ``f01b_i01o->01bf``); outside a
  loop XLA:CPU's layout pass inserts transposes and YNNPACK runs them, but inside a
  ``scan``/``while`` body it cannot, and XLA falls back to its naive convolution loop: a scanned
  NetResDeep step was 60-100x slower than the unrolled one (jaxlib 0.10.2). With this rule the
  scanned stack runs at roughly the unrolled speed and compiles in constant time in depth.
* Native kernels (``relujax._src.native``): on CPU, in a single-device process, each
  stride-1 float32 piece of :func:`conv_general_dilated` (forward, input gradient, kernel
  gradient) whose output channels are a multiple of the vector width runs as an XLA FFI call
  into relujax's register-blocked direct convolutions, compiled on first use for the machine.
  They need no transposed copies of the input or cotangent (XLA's kernel gradient needs
  both). On a 2-core Zen 1 VM (``python -m benchmarks.conv_pieces``): a ResBlock's kernel
  gradient 4.63 vs 7.19 ms, forward 4.80 vs 5.14 ms; NetResDeep's step 0-10% faster in six
  side-by-side comparisons, NetDepth's 1.24x (``benchmarks/RESULTS.md``, session 4).
  ``native=False`` or ``RELUJAX_NATIVE=0`` keeps XLA's convolutions.
* :func:`compiler_options`: per-backend XLA compile options for training steps. On XLA:CPU,
  convolutions go to Eigen instead of YNNPACK (reductions and dots stay with YNNPACK): on an
  idle 2-core Zen 5 VM the three convolution pieces of a ResBlock ran 1.7-2.3x faster under
  Eigen, and NetResDeep's training step 1.32x faster (``benchmarks/RESULTS.md``).
* :func:`max_pool`: non-overlapping max pooling (window = stride, no padding: the book's
  ``F.max_pool2d(x, 2)``) as a reshape and a max, with an explicit derivative that sends each
  window's cotangent to its first maximum, as ``lax.reduce_window``'s does (bit-identical
  results, forward and reverse mode; NaN windows as in PyTorch). XLA:CPU expands the stock
  derivative (``select_and_scatter``) into index iotas, a variadic reduce-window and a
  scatter: NetResDeep's first pool, forward+backward, is 6-10x faster this way
  (``python -m benchmarks.conv_pieces``).
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

from relujax._src import native as _native

__all__ = [
    "compiler_options",
    "conv_general_dilated",
    "default_backend",
    "max_pool",
    "native_enabled",
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


# YNNPACK keeps the fusions it is best at (reductions, dots); convolutions fall to Eigen.
_CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_DOT"
}


@functools.cache
def _cpu_options_accepted() -> bool:
    # The flag is experimental: an XLA that no longer knows it (or its values) rejects the
    # compile; then the defaults are used rather than failing every training step.
    try:
        jax.jit(lambda v: v + 1).lower(jnp.zeros(2)).compile(compiler_options=_CPU_OPTIONS)
    except Exception:  # noqa: BLE001 - any rejection means "not supported here"
        return False
    return True


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """XLA compile options for training steps on ``backend`` (default: JAX's), or ``None``.

    Pass them to ``jax.jit(..., compiler_options=compiler_options())``; ``relujax.training``
    does. On CPU they make XLA run convolutions with Eigen rather than YNNPACK (reductions and
    dots stay with YNNPACK). Measured side by side on an idle 2-core AMD EPYC (Zen 5) VM, jaxlib
    0.10.2 (``benchmarks/RESULTS.md``): each piece of a ResBlock's convolution (forward, input
    and kernel gradient) 1.7-2.3x faster (``python -m benchmarks.conv_pieces``); NetResDeep's
    training step (100 blocks, batch 64) 677 ms vs 897 ms for the best step under the default
    options (``python -m benchmarks.train_step --kernel-grad``).
    ``None`` on other backends, and on a CPU whose XLA rejects the (experimental) option.

    Example:
        >>> compiler_options("gpu") is None
        True
    """
    backend = default_backend() if backend is None else backend
    if backend != "cpu" or not _cpu_options_accepted():
        return None
    return dict(_CPU_OPTIONS)


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
    native: bool | None = None,
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
    the output channels exceed 16, else one convolution); ``None`` (default): ``"conv"``. Use
    ``"split"`` only for steps compiled with XLA:CPU's default options (YNNPACK convolutions);
    with :func:`compiler_options` (Eigen convolutions), as ``relujax.training`` compiles them,
    one convolution is faster (NetResDeep step 677 vs 732 ms).

    ``native`` (stride-1 float32 convolutions on CPU): ``None`` (default) runs each piece that
    ``relujax._src.native`` supports (forward, input gradient, kernel gradient) with its
    register-blocked kernels, the rest with XLA; ``False`` always XLA; ``True`` as ``None`` but
    raises when the native library is unavailable. Equal to ``lax`` within float rounding;
    deterministic. Used only in single-device processes (XLA's SPMD partitioner cannot split
    a custom call).

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
    if native not in (None, True, False):
        raise ValueError(
            f"conv_general_dilated: native must be None, True or False, got {native!r}"
        )
    if native and not _native.available():
        raise ValueError(
            "conv_general_dilated: native=True but the native kernels are unavailable: "
            f"{_native.build_error() or 'not on the CPU backend'}"
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
        kernel_grad = "conv"
    use_native = native is not False and strides == (1, 1) and native_enabled()
    return _conv_nhwc_p(lhs, rhs, strides, tuple(pads), precision, kernel_grad, use_native)


def native_enabled() -> bool:
    """Whether :func:`conv_general_dilated` runs relujax's native kernels in this process.

    The native library is available (CPU backend, built and loaded) and there is one device:
    in a sharded step XLA would gather a custom call's operands onto every device.
    """
    return jax.device_count() == 1 and _native.available()


def _plain_conv(x, w, strides, pads, precision, **kw):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision, **kw
    )


def _forward(x, w, strides, pads, precision, kernel_grad="conv", use_native=False):
    del kernel_grad
    if use_native and _native.supports(x.shape, w.shape, pads, x.dtype):
        return _native.conv(x, w, pads)
    return _plain_conv(x, w, strides, pads, precision)


def _fwd(x, w, strides, pads, precision, kernel_grad, use_native):
    return _forward(x, w, strides, pads, precision, use_native=use_native), (x, w)


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


def _bwd(strides, pads, precision, kernel_grad, use_native, res, g):
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
    if use_native and _native.supports(g.shape, w_t.shape, dx_pads, g.dtype):
        dx = _native.conv(g, w_t, dx_pads)
    else:
        dx = _plain_conv(g, w_t, (1, 1), dx_pads, precision, lhs_dilation=strides)
    if use_native and _native.supports(x.shape, w.shape, pads, x.dtype):
        dw = _native.conv_kernel_grad(x, g, (kh, kw), pads)
    else:
        dw = _kernel_grad(x, g, strides, pads, precision, kernel_grad)
        dw = dw[:, :kh, :kw, :].transpose(1, 2, 0, 3)
    dw = dw.astype(w.dtype)
    return dx.astype(x.dtype), dw


_conv_nhwc_p = jax.custom_vjp(_forward, nondiff_argnums=(2, 3, 4, 5, 6))
_conv_nhwc_p.defvjp(_fwd, _bwd)


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
