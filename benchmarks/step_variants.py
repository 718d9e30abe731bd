"""NetResDeep's training step under variants of compile options and block formulation (JAX only).

The A/B behind ``relujax._src.perf.compiler_options`` and the alternatives tried and dropped,
side by side in one process (each turn: one untimed step, then one timed; medians). Every variant
is ``benchmarks.train_step``'s ``jax.jit`` step over ``nnx.split`` state, NetResDeep with 100
independent blocks (``--blocks``), float32, on the default backend:

* ``default``: XLA's default options (on CPU: YNNPACK convolutions), canonical-backward conv;
* ``train``: ``perf.compiler_options()`` (Eigen convolutions, YNNPACK reductions and dots) and
  ``perf.conv_general_dilated`` with its defaults (on CPU relujax's native convolution
  kernels, ``relujax._src.native``): what ``python -m train`` compiles;
* ``train, XLA convs``: the same with XLA's convolutions (``native=False``), the step before
  the native kernels;
* ``train, lax conv``: the same options with ``lax``'s own convolution transpose rule;
* ``train, split dW``: XLA's convolutions with the 16-image kernel-gradient split;
* ``eigen everything``: no YNNPACK fusion at all;
* ``+ynn eltwise``: YNNPACK also for element-wise fusions;
* ``+concurrency scheduler`` / ``+vector width 512``: two more XLA:CPU options on top of ``train``;
* ``train, BN vjp``: the blocks' BatchNorm with a hand-written VJP (two reductions, one pass);
* ``train, remat BN``: ``jax.checkpoint`` around each block's BN -> relu -> add.

On backends other than CPU the CPU-only variants are skipped.

    python -m benchmarks.step_variants
    python -m benchmarks.step_variants --quick      # 4 blocks, batch 8
    python -m benchmarks.step_variants --only "train, BN vjp" --repeats 15
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks import _harness as h
from benchmarks.train_step import _build, _data, jax_split_step
from relujax._src import perf

_YNN = "xla_cpu_experimental_ynn_fusion_type"


def _with(**extra: Any) -> dict[str, Any]:
    return {**(perf.compiler_options() or {}), **extra}


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn(x, scale, bias, eps):
    return _bn_fwd(x, scale, bias, eps)[0]


def _bn_fwd(x, scale, bias, eps):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    rstd = jax.lax.rsqrt(var + eps)
    return ((x - mean) * (rstd * scale) + bias, mean, var), (x, mean, rstd, scale)


def _bn_bwd(eps, res, cts):
    x, mean, rstd, scale = res
    gy, gmean, gvar = cts
    axes = tuple(range(x.ndim - 1))
    m = x.size // x.shape[-1]
    xhat = (x - mean) * rstd
    sg, sgx = jnp.sum(gy, axis=axes), jnp.sum(gy * xhat, axis=axes)
    dx = (scale * rstd / m) * (m * gy - sg - xhat * sgx) + gmean / m
    return dx + gvar * (2.0 / m) * (x - mean), sgx, sg


_bn.defvjp(_bn_fwd, _bn_bwd)


def _tail(h_, x, scale, bias, eps):
    axes = tuple(range(h_.ndim - 1))
    mean = jnp.mean(h_, axis=axes)
    var = jnp.mean(jnp.square(h_ - mean), axis=axes)
    y = (h_ - mean) * (jax.lax.rsqrt(var + eps) * scale) + bias
    return jax.nn.relu(y) + x, mean, var


_remat_tail = jax.checkpoint(_tail, static_argnums=(4,))


def _patched_block_call(kind: str):
    """A ResBlock.__call__ (training mode, no mask) with BN as ``kind``: 'vjp' or 'remat'."""

    def call(self, x, *, mask=None):
        bn = self.batch_norm
        h_ = self.conv(x)
        args = (bn.scale[...], bn.bias[...], bn.epsilon)
        if kind == "vjp":
            y, mean, var = _bn(h_, *args)
            out = jax.nn.relu(y) + x
        else:
            out, mean, var = _remat_tail(h_, x, *args)
        n, m = h_.size // bn.num_features, bn.momentum
        bn.mean[...] = (1 - m) * bn.mean[...] + m * jax.lax.stop_gradient(mean)
        bn.var[...] = (1 - m) * bn.var[...] + m * jax.lax.stop_gradient(var * n / (n - 1))
        return out

    return call


def variants() -> dict[str, tuple[Any, dict[str, Any] | None, str | None]]:
    """label -> (fast_conv for ``_build``, compile options, block patch)."""
    out: dict[str, tuple[Any, dict[str, Any] | None, str | None]] = {
        "default": ({"native": False}, None, None),
        "train": (True, perf.compiler_options(), None),
    }
    if perf.compiler_options() is None:
        return out
    out.update(
        {
            "train, XLA convs": ({"native": False}, perf.compiler_options(), None),
            "train, lax conv": (False, perf.compiler_options(), None),
            "train, split dW": (
                {"kernel_grad": "split", "native": False},
                perf.compiler_options(),
                None,
            ),
            "eigen everything": (True, {_YNN: ""}, None),
            "+ynn eltwise": (
                True,
                _with(**{_YNN: perf.compiler_options()[_YNN] + ",LIBRARY_FUSION_TYPE_ELTWISE"}),
                None,
            ),
            "+concurrency scheduler": (
                True,
                _with(xla_cpu_enable_concurrency_optimized_scheduler=True),
                None,
            ),
            "+vector width 512": (True, _with(xla_cpu_prefer_vector_width=512), None),
            "train, BN vjp": (True, perf.compiler_options(), "vjp"),
            "train, remat BN": (True, perf.compiler_options(), "remat"),
        }
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from relujax._src.models.resblock import ResBlock

    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=None, help="ResBlocks (default 100; quick 4)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (quick: 8)")
    p.add_argument(
        "--only", nargs="+", default=None, help='variant labels to time (always with "train")'
    )
    args = p.parse_args(argv)
    blocks = args.blocks or (4 if args.quick else 100)
    batch = args.batch_size or (8 if args.quick else 64)
    h.header(f"step_variants (NetResDeep, {blocks} blocks, batch {batch})")
    x, y = _data(batch, 2)
    runners, info = {}, {}
    original = ResBlock.__call__
    chosen = variants()
    if args.only:
        unknown = sorted(set(args.only) - set(chosen))
        if unknown:
            p.error(f"--only: unknown variants {unknown}; known: {sorted(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k == "train" or k in args.only}
    for label, (fast, opts, patch) in chosen.items():
        try:
            if patch:
                ResBlock.__call__ = _patched_block_call(patch)
            model = _build(
                {"name": "netresdeep", "n_blocks": blocks},
                fast_conv=fast,
                scan=False,
                dtype=jnp.float32,
            )
            runners[label], c, mem = jax_split_step(
                model, optax.sgd(1e-3), x, y, compiler_options=opts
            )
        finally:
            ResBlock.__call__ = original
        info[label] = {"compile_s": c, "temp_MiB": None if mem is None else mem["temp"] / 2**20}
        print(f"  compiled {label:24s} {c:5.1f} s", flush=True)
    times = h.time_alternating(runners, repeats=args.repeats or (3 if args.quick else 9), settle=1)
    ref = times["train"]["median"]
    rows = [
        {
            "variant": label,
            "step_ms": 1e3 * t["median"],
            "vs_train": ref / t["median"],
            **info[label],
            "samples": t["samples"],
        }
        for label, t in times.items()
    ]
    print("\n" + h.format_table(rows, ["variant", "step_ms", "vs_train", "compile_s", "temp_MiB"]))
    doc = {"blocks": blocks, "batch": batch, "rows": rows, "argv": sys.argv[1:]}
    h.write_json("step_variants", doc, quick=args.quick, out=args.out)
    return {"rows": rows}


if __name__ == "__main__":
    main()
