"""Activation speed and memory: relujax vs jax.nn vs PyTorch vs the elementwise limit.

For every function of ``relujax.ACTIVATIONS`` at its default arguments and at each of its
registered variants (e.g. ``gelu(approximate=True)``), on a float32 array well past the caches:

* forward and forward+backward (``y, vjp(g)``) time and effective GB/s, for relujax, its
  ``jax.nn`` counterpart and ``torch.nn.functional`` on the same machine, timed in turn;
* the limit: a plain fused elementwise op that moves the same bytes (forward: read x, write y;
  forward+backward: read x and g, write y and dx), timed in the same rounds;
* residual bytes per element kept for the backward pass (the bytes of ``jax.vjp``'s residuals,
  as tests/test_activations_memory.py counts them);
* the compiled HLO of a conv -> BatchNorm -> activation -> add block's forward+backward: the
  number of fusions and of kernels launched, relujax vs jax.nn (they must fuse alike).

    python -m benchmarks.activations            # 2**24 elements (64 MiB per f32 array)
    python -m benchmarks.activations --quick    # 2**18 elements, 3 rounds
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import relujax
from benchmarks import _harness as h
from relujax._src import allocator
from relujax._src.activations.memory import residual_bytes

# torch.nn.functional calls matching each relujax function at its default arguments.
_TORCH_CALLS = {
    "relu": lambda F, x, t: F.relu(x),
    "relu6": lambda F, x, t: F.relu6(x),
    "leaky_relu": lambda F, x, t: F.leaky_relu(x, 0.01),
    "prelu": lambda F, x, t: F.prelu(x, t.full((1,), 0.25, dtype=x.dtype, device=x.device)),
    "rrelu": lambda F, x, t: F.rrelu(x, 1 / 8, 1 / 3, training=False),
    "elu": lambda F, x, t: F.elu(x),
    "celu": lambda F, x, t: F.celu(x),
    "selu": lambda F, x, t: F.selu(x),
    "gelu": lambda F, x, t: F.gelu(x),
    "gelu(approximate=True)": lambda F, x, t: F.gelu(x, approximate="tanh"),
    "silu": lambda F, x, t: F.silu(x),
    "softplus": lambda F, x, t: F.softplus(x),
}


def _jax_fns(fn, x, g):
    fwd = jax.jit(fn)

    def fwd_bwd(x, g):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(g)[0]

    fb = jax.jit(fwd_bwd)
    return (lambda: fwd(x)), (lambda: fb(x, g))


def _limit_fns(x, g):
    one = jnp.asarray(1, x.dtype)
    fwd = jax.jit(lambda x: x * one + one)
    fb = jax.jit(lambda x, g: (x + g, x * g))
    return (lambda: fwd(x)), (lambda: fb(x, g))


def _torch_fns(name, n, device):
    import torch
    import torch.nn.functional as F

    call = _TORCH_CALLS[name]
    gen = torch.Generator().manual_seed(0)
    xt = (3 * torch.randn(n, generator=gen)).to(device)
    gt = torch.randn(n, generator=gen).to(device)
    xr = xt.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return call(F, xt, torch)

    def fwd_bwd():
        y = call(F, xr, torch)
        (dx,) = torch.autograd.grad(y, xr, gt)
        return y, dx

    return fwd, fwd_bwd


def count_kernels(hlo_text: str) -> dict[str, int]:
    """Fusions and other kernels in the ENTRY computation of an optimized HLO module."""
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}") + 2]
    ops = re.findall(r"=\s+\S+\s+([a-z][a-z0-9\-]*)\(", entry)
    free = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant"}
    kinds = Counter(re.findall(r"kind=(k\w+)", entry))
    counts = Counter(ops)
    return {
        "fusions": counts.get("fusion", 0),
        "kernels": sum(v for k, v in counts.items() if k not in free),
        **{f"fusion_{k[1:].lower()}": v for k, v in sorted(kinds.items())},
    }


def block_hlo(act) -> dict[str, int]:
    """Kernel counts of the forward+backward of conv -> BN (batch stats) -> act -> + x."""
    dn = ("NHWC", "HWIO", "NHWC")

    def blk(x, w, gamma, beta):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
        mean = y.mean((0, 1, 2))
        var = jnp.square(y - mean).mean((0, 1, 2))
        y = (y - mean) * (jax.lax.rsqrt(var + 1e-5) * gamma) + beta
        return act(y) + x

    def loss(params, x):
        return jnp.sum(blk(x, *params) ** 2)

    x = jnp.ones((8, 16, 16, 32), jnp.float32)
    f32 = jnp.float32
    params = (jnp.ones((3, 3, 32, 32), f32), jnp.ones(32, f32), jnp.zeros(32, f32))
    text = jax.jit(jax.grad(loss)).lower(params, x).compile().as_text()
    return count_kernels(text)


def cases(names: list[str]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(label, spec, kwargs) for each function's default arguments and each registered variant."""
    out = []
    for name in names:
        spec = relujax.ACTIVATIONS[name]
        for kw in spec.cases():
            changed = {k: v for k, v in kw.items() if spec.default_kwargs.get(k) != v}
            args = ", ".join(f"{k}={v}" for k, v in changed.items())
            label = f"{name}({args})" if changed else name
            out.append((label, spec, kw))
    return out


def run(args) -> dict[str, Any]:
    quick = args.quick
    n = 2**18 if quick else 2**24
    repeats = args.repeats or (3 if quick else 9)
    use_torch = not args.no_torch and h.torch_available()
    device = h.torch_device()
    key = jax.random.key(0)
    x = 3 * jax.random.normal(key, (n,), jnp.float32)
    g = jax.random.normal(jax.random.key(1), (n,), jnp.float32)
    xs = x[:4096]
    itemsize = 4
    rows = []
    hlo_rows = []
    names = args.only.split(",") if args.only else list(relujax.ACTIVATIONS)
    for label, spec, kw in cases(names):
        name = label
        fns_f, fns_b = {}, {}
        fns_f["relujax"], fns_b["relujax"] = _jax_fns(lambda x, kw=kw, f=spec.fn: f(x, **kw), x, g)
        if spec.jax_nn is not None:
            nn_fn = lambda x, kw=kw, f=spec.jax_nn: f(x, **kw)  # noqa: E731
            fns_f["jax.nn"], fns_b["jax.nn"] = _jax_fns(nn_fn, x, g)
        if use_torch and name in _TORCH_CALLS:
            fns_f["torch"], fns_b["torch"] = _torch_fns(name, n, device)
        fns_f["limit"], fns_b["limit"] = _limit_fns(x, g)
        tf = h.time_alternating(fns_f, repeats=repeats)
        tb = h.time_alternating(fns_b, repeats=repeats)
        row: dict[str, Any] = {"function": name}
        for impl in fns_f:
            row[f"fwd_ms_{impl}"] = 1e3 * tf[impl]["median"]
            row[f"fwd_GBps_{impl}"] = 2 * n * itemsize / tf[impl]["median"] / 1e9
            row[f"fb_ms_{impl}"] = 1e3 * tb[impl]["median"]
            row[f"fb_GBps_{impl}"] = 4 * n * itemsize / tb[impl]["median"] / 1e9
        for impl in ("jax.nn", "torch"):
            if impl in fns_b:
                row[f"fb_speedup_vs_{impl}"] = tb[impl]["median"] / tb["relujax"]["median"]
                row[f"fwd_speedup_vs_{impl}"] = tf[impl]["median"] / tf["relujax"]["median"]
        row["fb_pct_of_limit"] = 100 * tb["limit"]["median"] / tb["relujax"]["median"]
        row["fwd_pct_of_limit"] = 100 * tf["limit"]["median"] / tf["relujax"]["median"]
        row["residual_B_per_elt"] = residual_bytes(spec.fn, xs, **kw)
        if spec.jax_nn is not None:
            row["residual_B_per_elt_jax.nn"] = residual_bytes(spec.jax_nn, xs, **kw)
            hl = {"function": name}
            for impl, act in (("relujax", spec.fn), ("jax.nn", spec.jax_nn)):
                counts = block_hlo(lambda y, act=act, kw=kw: act(y, **kw))
                hl[f"fusions_{impl}"] = counts["fusions"]
                hl[f"kernels_{impl}"] = counts["kernels"]
            hlo_rows.append(hl)
        rows.append(row)
        print(
            f"{name:22s} fwd+bwd {row['fb_ms_relujax']:.2f} ms "
            f"({row['fb_GBps_relujax']:.1f} GB/s, {row['fb_pct_of_limit']:.0f}% of limit)",
            flush=True,
        )
    return {"n_elements": n, "dtype": "float32", "repeats": repeats, "rows": rows, "hlo": hlo_rows}


def table_columns(pass_: str) -> list[str]:
    """The columns of the time table of ``pass_`` ("fb": forward+backward, "fwd": forward)."""
    return ["function"] + [
        f"{pass_}_{c}"
        for c in (
            "ms_relujax",
            "ms_jax.nn",
            "ms_torch",
            "ms_limit",
            "GBps_relujax",
            "speedup_vs_jax.nn",
            "speedup_vs_torch",
            "pct_of_limit",
        )
    ]


def print_tables(result: dict[str, Any]) -> None:
    rows = result["rows"]
    print(f"\n## forward+backward, {result['n_elements']:,} float32 elements (median ms)\n")
    print(h.format_table(rows, table_columns("fb")))
    print(f"\n## forward only, {result['n_elements']:,} float32 elements (median ms)\n")
    print(h.format_table(rows, table_columns("fwd")))
    print("\n## residual bytes per element kept for backward\n")
    print(h.format_table(rows, ["function", "residual_B_per_elt", "residual_B_per_elt_jax.nn"]))
    print("\n## conv -> BN -> act -> add block, forward+backward: compiled HLO kernels\n")
    print(
        h.format_table(
            result["hlo"],
            ["function", "fusions_relujax", "fusions_jax.nn", "kernels_relujax", "kernels_jax.nn"],
        )
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="comma list of activation names (default: all)")
    args = p.parse_args(argv)
    h.header("activations")
    result = run(args)
    print_tables(result)
    h.write_json("activations", result, quick=args.quick, out=args.out, argv=argv)
    return result


if __name__ == "__main__":
    allocator.relaunch()
    np.set_printoptions(precision=3)
    main()
