"""relujax._src.perf: the canonical-backward convolution equals lax's, value and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from relujax._src import perf

DN = ("NHWC", "HWIO", "NHWC")


CONV_CASES = [
    (9, 3, 1, "SAME"),
    (8, 1, 2, "VALID"),
    (9, 3, 2, ((1, 1), (1, 1))),
    (7, 7, 2, ((3, 3), (3, 3))),
    (6, 3, 1, ((0, 2), (2, 0))),
]


def _close(a, b, tol=1e-5):
    scale = max(float(jnp.max(jnp.abs(b))), 1e-30)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def _pair(stride, padding, native=None):
    def ref(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)

    def new(x, w):
        return perf.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=DN, native=native
        )

    return ref, new


def _operands(size, k, seed=0, o=8):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 3, o)) / k, jnp.float32)
    return x, w


@pytest.mark.parametrize("native", [None, False])
@pytest.mark.parametrize("size,k,stride,padding", CONV_CASES)
def test_conv_matches_lax(size, k, stride, padding, native):
    x, w = _operands(size, k)
    ref, new = _pair(stride, padding, native)

    @jax.jit
    def both(x, w, g):
        (y0, vjp0), (y1, vjp1) = jax.vjp(ref, x, w), jax.vjp(new, x, w)
        return y0, y1, vjp0(g), vjp1(g)

    g = jnp.asarray(np.random.default_rng(1).standard_normal(jax.eval_shape(ref, x, w).shape))
    y0, y1, grads0, grads1 = both(x, w, g.astype(jnp.float32))
    _close(y1, y0)
    for a, b in zip(grads1, grads0, strict=True):
        _close(a, b)


# 16 output channels: a multiple of every native vector width, so on CPU the stride-2 case
# takes the native kernels through space-to-depth (8 would not on AVX-512).
@pytest.mark.parametrize(
    "size,k,stride,padding,o",
    [(*CONV_CASES[0], 8), (*CONV_CASES[2], 8), (*CONV_CASES[4], 8), (*CONV_CASES[2], 16)],
)
def test_conv_every_ad_mode_matches_lax(size, k, stride, padding, o):
    # Forward mode, reverse mode, their compositions and vmap, against lax's own rules.
    x, w = _operands(size, k, o=o)
    tx, tw = _operands(size, k, seed=2, o=o)
    ref, new = _pair(stride, padding)

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w)))

    def modes(conv):
        f = loss(conv)
        return {
            "jvp": jax.jvp(conv, (x, w), (tx, tw))[1],
            "grad": jax.grad(f, (0, 1))(x, w),
            "jacfwd": jax.jacfwd(conv, 1)(x[:1], w),
            "hvp": jax.jvp(jax.grad(f, 1), (x, w), (tx, tw))[1],
            "grad_of_grad": jax.grad(lambda x, w: jnp.sum(jax.grad(f, 1)(x, w) ** 2), (0, 1))(x, w),
            "vmap_x": jax.vmap(conv, (0, None))(x[:, None], w),
            "vmap_w": jax.vmap(conv, (None, 0))(x, jnp.stack([w, tw])),
            "per_example_grad": jax.vmap(jax.grad(f, 1), (0, None))(x[:, None], w),
        }

    want, got = jax.jit(lambda: modes(ref))(), jax.jit(lambda: modes(new))()
    for name in want:
        for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(want[name]), strict=True):
            assert a.shape == b.shape and a.dtype == jnp.float32, name
            _close(a, b, 1e-4)
    # eager (unjitted) binding gives the same values
    _close(new(x, w), ref(x, w))


S2D_CASES = [
    (8, 3, ((1, 1), (1, 1))),  # resnet's stride-2 convolutions: even size
    (9, 3, ((1, 1), (1, 1))),  # odd size: the last row and column of blocks half padding
    (8, 3, ((0, 0), (0, 0))),  # rows past the last window cropped
    (11, 3, ((1, 0), (0, 1))),  # asymmetric padding
    (8, 2, ((0, 0), (0, 0))),  # even kernel: no zero taps
    (9, 5, ((2, 2), (2, 2))),
    (10, 7, ((3, 3), (3, 3))),  # the ImageNet ResNets' stem
]


@pytest.mark.parametrize("size,k,padding", S2D_CASES)
def test_stride2_conv_as_space_to_depth(size, k, padding):
    # Where the policy runs native kernels, stride-2 convolutions are rewritten as stride-1
    # ones over 2x2 blocks (perf._space_to_depth_conv): the same values and gradients as lax,
    # and every piece on the native kernels (no XLA convolution left in the compiled step).
    from relujax._src import policy

    # 4 input and 16 output channels: the rewritten convolution and its input gradient have 16
    # output channels, a multiple of every native vector width.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, size, size, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 4, 16)) / k, jnp.float32)
    ref, new = _pair(2, padding)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(jax.eval_shape(ref, x, w).shape))
    step = jax.jit(lambda x, w, g: jax.vjp(new, x, w)[1](g) + (new(x, w),))
    *grads1, y1 = step(x, w, g)
    y0, vjp0 = jax.vjp(ref, x, w)
    _close(y1, y0)
    for a, b in zip(grads1, vjp0(g), strict=True):
        _close(a, b)
    hlo = step.lower(x, w, g).compile().as_text()
    if policy.native_convs():
        assert " convolution(" not in hlo and hlo.count("relujax_conv") >= 3
    # The rewrite is for the native kernels only: XLA's convolutions stay as they were.
    xla = jax.jit(
        lambda x, w: perf.conv_general_dilated(
            x, w, (2, 2), padding, dimension_numbers=DN, native=False
        )
    )
    assert "relujax_conv" not in xla.lower(x, w).compile().as_text()


def test_conv_jvp_in_scan():
    # Forward mode through a scanned stack: what the old custom_vjp convolution could not do.
    rng = np.random.default_rng(0)
    w = jnp.asarray(0.2 * rng.standard_normal((3, 3, 3, 8, 8)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 8)), jnp.float32)

    def stack(conv):
        def body(h, wi):
            return jnp.tanh(conv(h, wi, (1, 1), "SAME", dimension_numbers=DN)), None

        return lambda x, w: lax.scan(body, x, w)[0]

    t = (x * 0.5, w * 0.1)
    got = jax.jit(lambda: jax.jvp(stack(perf.conv_general_dilated), (x, w), t))()
    want = jax.jit(lambda: jax.jvp(stack(lax.conv_general_dilated), (x, w), t))()
    for a, b in zip(got, want, strict=True):
        _close(a, b)


def test_conv_falls_back_for_other_layouts():
    x = jnp.ones((1, 3, 5, 5), jnp.float32)
    w = jnp.ones((4, 3, 3, 3), jnp.float32)
    dn = ("NCHW", "OIHW", "NCHW")
    y = perf.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    ref = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    np.testing.assert_array_equal(y, ref)


def test_grad_in_scan_equals_unrolled():
    rng = np.random.default_rng(0)
    w = jnp.asarray(0.2 * rng.standard_normal((3, 3, 3, 4, 4)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 4)), jnp.float32)

    def body(h, wi):
        return jnp.tanh(
            perf.conv_general_dilated(h, wi, (1, 1), "SAME", dimension_numbers=DN)
        ), None

    def scanned(w):
        return jnp.sum(lax.scan(body, x, w)[0])

    def unrolled(w):
        h = x
        for i in range(3):
            h = jnp.tanh(lax.conv_general_dilated(h, w[i], (1, 1), "SAME", dimension_numbers=DN))
        return jnp.sum(h)

    got, want = jax.jit(lambda w: (jax.grad(scanned)(w), jax.grad(unrolled)(w)))(w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_use_fast_conv_keeps_outputs():
    model = nnx.Sequential(
        nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)),
        nnx.Conv(4, 2, (3, 3), strides=2, rngs=nnx.Rngs(1)),
    )
    x = jnp.ones((2, 8, 8, 3), jnp.float32)
    before = nnx.jit(lambda m, x: m(x))(model, x)
    perf.use_fast_conv(model)
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]
    assert all(c.conv_general_dilated is perf.conv_general_dilated for c in convs)
    after = nnx.jit(lambda m, x: m(x))(model, x)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "batch,stride,padding",
    [(40, 1, "SAME"), (64, 1, ((1, 1), (1, 1))), (33, 2, ((1, 1), (1, 1))), (17, 2, "VALID")],
)
@pytest.mark.parametrize("kernel_grad", ["split", "conv"])
def test_kernel_grad_float32_matches_lax(batch, stride, padding, kernel_grad):
    # "split" sums 16-image pieces (batches not a multiple of 16 are zero-padded): the same
    # products in another order, so float32 results agree with lax's to rounding.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((batch, 10, 10, 8)), jnp.float32)
    w = jnp.asarray(0.2 * rng.standard_normal((3, 3, 8, 24)), jnp.float32)

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)

    def new(x, w):  # native=False: XLA's convolutions, where kernel_grad applies
        return perf.conv_general_dilated(
            x,
            w,
            (stride, stride),
            padding,
            dimension_numbers=DN,
            kernel_grad=kernel_grad,
            native=False,
        )

    g = jnp.asarray(rng.standard_normal(jax.eval_shape(ref, x, w).shape), jnp.float32)

    @jax.jit
    def grads(x, w, g):
        return jax.vjp(ref, x, w)[1](g), jax.vjp(new, x, w)[1](g)

    (dx0, dw0), (dx1, dw1) = grads(x, w, g)
    assert dw1.dtype == jnp.float32 and dw1.shape == w.shape
    scale = float(jnp.max(jnp.abs(dw0)))
    np.testing.assert_allclose(dw1, dw0, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(dx0))))


def test_kernel_grad_split_in_scan():
    rng = np.random.default_rng(2)
    w = jnp.asarray(0.2 * rng.standard_normal((2, 3, 3, 4, 4)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((20, 6, 6, 4)), jnp.float32)

    def loss(w, kernel_grad):
        def body(h, wi):
            y = perf.conv_general_dilated(
                h, wi, (1, 1), "SAME", dimension_numbers=DN, kernel_grad=kernel_grad, native=False
            )
            return jnp.tanh(y), None

        return jnp.sum(lax.scan(body, x, w)[0])

    split, conv = jax.jit(lambda w: (jax.grad(loss)(w, "split"), jax.grad(loss)(w, "conv")))(w)
    np.testing.assert_allclose(split, conv, rtol=1e-5, atol=1e-5)


def test_kernel_grad_rejects_unknown():
    x, w = jnp.ones((1, 4, 4, 2), jnp.float32), jnp.ones((3, 3, 2, 2), jnp.float32)
    with pytest.raises(ValueError, match="kernel_grad"):
        perf.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN, kernel_grad="x")


def test_use_fast_conv_kernel_grad():
    model = perf.use_fast_conv(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)), kernel_grad="conv")
    assert model.conv_general_dilated.keywords == {"kernel_grad": "conv"}


# --- max_pool ---------------------------------------------------------------------------------


def _stock_pool(x, k):
    return nnx.max_pool(x, (k, k), strides=(k, k))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 7, 9, 2), (1, 6, 6, 1)])
@pytest.mark.parametrize("k", [2, 3])
def test_max_pool_matches_lax_bitwise(shape, k):
    # Integer-valued, ReLU'd input: many tied maxima (zeros and repeats), where the choice of
    # which element gets the cotangent shows.
    rng = np.random.default_rng(k)
    x = jnp.asarray(np.maximum(rng.integers(-3, 4, shape), 0), jnp.float32)
    out_shape = _stock_pool(x, k).shape
    g = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    t = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    np.testing.assert_array_equal(perf.max_pool(x, k), _stock_pool(x, k))
    for f_vjp in (jax.jit, lambda f: f):
        mine = f_vjp(lambda x, g: jax.vjp(lambda v: perf.max_pool(v, k), x)[1](g)[0])(x, g)
        ref = jax.vjp(lambda v: _stock_pool(v, k), x)[1](g)[0]
        np.testing.assert_array_equal(mine, ref)
    np.testing.assert_array_equal(
        jax.jvp(lambda v: perf.max_pool(v, k), (x,), (t,))[1],
        jax.jvp(lambda v: _stock_pool(v, k), (x,), (t,))[1],
    )


def test_max_pool_nan_window_like_torch():
    x = jnp.array([1.0, jnp.nan, 3.0, 2.0, 0.0, 5.0, 5.0, 5.0]).reshape(1, 2, 4, 1)
    y = perf.max_pool(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 0] == 5.0
    dx = jax.grad(lambda v: perf.max_pool(v, 2).sum())(x).ravel()
    # Rows (1, nan, 3, 2) and (0, 5, 5, 5): window 0 = (1, nan / 0, 5) sends it to the NaN,
    # window 1 = (3, 2 / 5, 5) to its first 5.
    np.testing.assert_array_equal(dx, [0, 1, 0, 0, 0, 0, 1, 0])


@pytest.mark.parametrize(
    ("x", "window", "match"),
    [
        (jnp.ones((4, 4)), 2, "NHWC"),
        (jnp.ones((1, 4, 4, 1)), 0, "positive int"),
        (jnp.ones((1, 4, 4, 1)), 5, "larger than the input"),
    ],
)
def test_max_pool_rejects_bad_input(x, window, match):
    with pytest.raises(ValueError, match=match):
        perf.max_pool(x, window)
