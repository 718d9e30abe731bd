"""Where a ResBlock's convolution time goes on this backend: forward, input and kernel gradient.

The 3x3, 32 -> 32 channel convolution of NetResDeep's blocks at 16x16, batch 64, float32, in
three pieces, timed in turn: NHWC/HWIO vs NCHW/OIHW, XLA's own transpose rule vs
``relujax._src.perf.conv_general_dilated``'s (its default one-convolution kernel gradient, and
``kernel_grad="split"``, a sum over 16-image slices of the batch), other kernel-gradient
formulations (nine shifted matrix products; an im2col matrix and one GEMM; batch slices of 8 or
32), (CPU only) YNNPACK vs XLA's Eigen convolutions (per-compile ``compiler_options``), and
relujax's native kernels (``relujax._src.native``, what ``python -m train`` runs on CPU: Winograd
for these 3x3 convolutions), also computed directly (no Winograd).

    python -m benchmarks.conv_pieces
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from benchmarks import _harness as h
from relujax._src import allocator, perf, policy

NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _shifted_dw(x, g):
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    gm = g.reshape(-1, g.shape[-1])
    n, hh, ww, c = x.shape
    rows = [
        lax.dot_general(
            xp[:, i : i + hh, j : j + ww, :].reshape(-1, c), gm, (((0,), (0,)), ((), ()))
        )
        for i in range(3)
        for j in range(3)
    ]
    return jnp.stack(rows).reshape(3, 3, c, g.shape[-1])


def _im2col_dw(x, g):
    # (9C, N*H*W) patches materialised, then one (9C, K) @ (K, O) GEMM.
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).transpose(3, 0, 1, 2)
    n, hh, ww, c = x.shape
    cols = [xp[:, :, i : i + hh, j : j + ww] for i in range(3) for j in range(3)]
    cols = jnp.stack(cols).reshape(9 * c, -1)
    return (cols @ g.reshape(-1, g.shape[-1])).reshape(3, 3, c, g.shape[-1])


def _sliced_dw(x, g, piece):
    # perf's kernel_grad="split" with another slice size: sum over batch slices of `piece` images.
    n, hh, ww, c = x.shape
    k = n // piece
    lhs = x.reshape(k, piece, hh, ww, c).transpose(0, 4, 2, 3, 1)
    rhs = g.reshape(k, piece, hh, ww, -1).transpose(0, 2, 3, 1, 4)
    dn = ("NHWC", "HWIO", "NHWC")
    out = sum(
        lax.conv_general_dilated(lhs[i], rhs[i], (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        for i in range(k)
    )
    return out.transpose(1, 2, 0, 3)


def _torch_runners(b: int, s: int, ch: int) -> dict[str, Any]:
    """PyTorch's pieces of the same convolution (oneDNN on CPU), NCHW and channels-last."""
    import torch
    import torch.nn.functional as F

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, ch, s, s, generator=gen).to(dev)
    w = (0.1 * torch.randn(ch, ch, 3, 3, generator=gen)).to(dev)
    g = torch.randn(b, ch, s, s, generator=gen).to(dev)
    back = torch.ops.aten.convolution_backward
    out = {}
    for fmt, mf in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        xx, ww, gg = (t.contiguous(memory_format=mf) for t in (x, w, g))
        calls = {
            "fwd": lambda xx=xx, ww=ww: F.conv2d(xx, ww, padding=1),
            "dx": lambda xx=xx, ww=ww, gg=gg: back(
                gg, xx, ww, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, (True, False, False)
            ),
            "dw": lambda xx=xx, ww=ww, gg=gg: back(
                gg, xx, ww, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, (False, True, False)
            ),
        }
        for piece, call in calls.items():

            def run(call=call):
                call()
                sync()

            out[f"torch {fmt} {piece}"] = run
    return out


def _pieces(layout: str, conv) -> dict[str, Any]:
    nhwc = layout == "NHWC"
    dn = ("NHWC", "HWIO", "NHWC") if nhwc else ("NCHW", "OIHW", "NCHW")

    def c(x, w):
        return conv(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)

    return {
        "fwd": c,
        "dx": lambda x, w, g: jax.vjp(lambda x: c(x, w), x)[1](g)[0],
        "dw": lambda x, w, g: jax.vjp(lambda w: c(x, w), w)[1](g)[0],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--settle",
        type=int,
        default=0,
        help="untimed calls before each timed one, per turn (1: consecutive-call timings)",
    )
    args = p.parse_args(argv)
    h.header("conv_pieces")
    b, s, ch = (8, 8, 16) if args.quick else (64, 16, 32)
    rng = np.random.default_rng(0)
    arrays = {}
    for layout in ("NHWC", "NCHW"):
        xs = (b, s, s, ch) if layout == "NHWC" else (b, ch, s, s)
        ws = (3, 3, ch, ch) if layout == "NHWC" else (ch, ch, 3, 3)
        x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
        w = jnp.asarray(0.1 * rng.standard_normal(ws), jnp.float32)
        arrays[layout] = (x, w, x)
    cases = {}
    for layout in ("NHWC", "NCHW"):
        for piece, fn in _pieces(layout, lax.conv_general_dilated).items():
            cases[f"{layout} lax {piece}"] = (fn, layout, {})
    xla_perf = functools.partial(perf.conv_general_dilated, native=False)  # XLA's convs only
    for piece, fn in _pieces("NHWC", xla_perf).items():
        if piece != "fwd":  # perf's default kernel gradient: one convolution
            cases[f"NHWC perf {piece}"] = (fn, "NHWC", {})
    split = functools.partial(perf.conv_general_dilated, kernel_grad="split", native=False)
    cases["NHWC perf dw (kernel_grad=split)"] = (_pieces("NHWC", split)["dw"], "NHWC", {})
    cases["NHWC shifted-matmul dw"] = (lambda x, w, g: _shifted_dw(x, g), "NHWC", {})
    cases["NHWC im2col-GEMM dw"] = (lambda x, w, g: _im2col_dw(x, g), "NHWC", {})
    for piece in (8, 32):
        if b % piece == 0 and b > piece:
            cases[f"NHWC {piece}-image-slices dw"] = (
                functools.partial(lambda x, w, g, p: _sliced_dw(x, g, p), p=piece),
                "NHWC",
                {},
            )
    if policy.default_backend() == "cpu":
        for piece, fn in _pieces("NHWC", lax.conv_general_dilated).items():
            cases[f"NHWC lax {piece} (Eigen, no YNNPACK)"] = (fn, "NHWC", NO_YNN)
        train_opts = policy.compiler_options()
        if train_opts is not None:  # perf's conv on XLA's Eigen convolutions
            for piece, fn in _pieces("NHWC", xla_perf).items():
                cases[f"NHWC perf {piece} (train: compiler_options)"] = (fn, "NHWC", train_opts)
        if policy.native_convs():  # what python -m train compiles on CPU: relujax's kernels
            for piece, fn in _pieces("NHWC", perf.conv_general_dilated).items():
                cases[f"NHWC native {piece} (train: native kernels)"] = (fn, "NHWC", train_opts)
                # A new function: jax.jit must not return the lowering cached for the row above.
                direct = functools.partial(lambda fn, *a: fn(*a), fn)
                cases[f"NHWC native {piece} (direct, no Winograd)"] = (direct, "NHWC", train_opts)
    runners = {}
    for name, (fn, layout, opts) in cases.items():
        x, w, g = arrays[layout]
        call_args = (x, w) if name.endswith("fwd") or "fwd (" in name else (x, w, g)
        direct = h.direct_convs() if "no Winograd" in name else contextlib.nullcontext()
        with direct:
            compiled = jax.jit(fn).lower(*call_args).compile(compiler_options=opts or None)
        runners[name] = lambda compiled=compiled, a=call_args: compiled(*a)
    # NetResDeep's first max pool (after the stem conv: 2x the block's width and height),
    # forward+backward: flax/lax's reduce_window vs relujax's (relujax._src.perf.max_pool).
    xp = jnp.asarray(rng.standard_normal((b, 2 * s, 2 * s, ch)), jnp.float32)
    gp = jnp.asarray(rng.standard_normal((b, s, s, ch)), jnp.float32)
    for name, pool in (
        ("max_pool 2x2 fwd+bwd (nnx.max_pool)", lambda v: nnx.max_pool(v, (2, 2), strides=(2, 2))),
        ("max_pool 2x2 fwd+bwd (perf.max_pool)", lambda v: perf.max_pool(v, 2)),
    ):
        c = jax.jit(lambda v, g, pool=pool: jax.vjp(pool, v)[1](g)[0]).lower(xp, gp).compile()
        runners[name] = lambda c=c: c(xp, gp)
    if not args.no_torch and h.torch_available():
        runners.update(_torch_runners(b, s, ch))
    times = h.time_alternating(
        runners, repeats=args.repeats or (3 if args.quick else 15), settle=args.settle
    )
    flops = 2 * b * s * s * ch * ch * 9
    rows = [
        {
            "case": name,
            "ms": 1e3 * t["median"],
            "GFLOP_per_s": None if name.startswith("max_pool") else flops / t["median"] / 1e9,
            "samples": t["samples"],
        }
        for name, t in times.items()
    ]
    print(h.format_table(rows, ["case", "ms", "GFLOP_per_s"]))
    doc = {"shape": [b, s, s, ch], "rows": rows}
    h.write_json("conv_pieces", doc, quick=args.quick, out=args.out, argv=argv)
    return {"rows": rows}


if __name__ == "__main__":
    allocator.relaunch()
    main()
