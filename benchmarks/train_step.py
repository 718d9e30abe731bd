"""Training-step throughput: relujax models vs their PyTorch originals on the same machine.

A full SGD step (forward, cross-entropy, backward, update; BatchNorm in training mode) on random
CIFAR-shaped data, float32, for each model and batch size. Candidates, timed in turn in one
process (medians of alternating rounds; compile time apart):

* ``nnx.jit``: the textbook Flax NNX step (``nnx.jit`` over the model and an ``nnx.Optimizer``);
* ``jit``: ``jax.jit`` of a pure function over ``nnx.split`` state (graphdef static), buffers
  donated, as ``relujax.training`` does (the ``python -m train`` step);
* ``jit+conv(split)``: the same with ``relujax._src.perf.conv_general_dilated`` in every conv,
  kernel gradient summed over 16-image slices (the best step under XLA:CPU's default options,
  which give convolutions to YNNPACK); ``--kernel-grad`` adds ``jit+conv`` (one-convolution
  kernel gradient) and ``jit+conv(split)+opts``;
* ``jit+conv+opts``: the canonical-backward conv (one-convolution kernel gradient, XLA's
  convolutions: ``native=False``) and ``perf.compiler_options()`` (XLA:CPU convolutions on
  Eigen, reductions and dots on YNNPACK): what ``python -m train`` compiled before session 4;
* ``jit+native+opts``: **what ``python -m train`` compiles on CPU**: the same options with
  ``perf.conv_general_dilated``'s defaults, i.e. relujax's native convolution kernels
  (``relujax._src.native``) wherever they apply; only where ``perf.native_enabled()``. On
  other backends (no options) ``jit`` is what ``python -m train`` runs;
* ``+scan``: the stacks of identical blocks scanned (compile time flat in depth);
* ``--impls`` keeps only the named candidates (``torch`` included);
* ``torch``: the PyTorch original (``tests/torch_models.py``), eager; ``torch.compile`` for the
  models named in ``--torch-compile``.

Peak memory: XLA's compiled memory analysis (temporaries + arguments + outputs) for JAX; for
PyTorch the bytes of tensors saved for backward (``saved_tensors_hooks``; on CUDA the allocator's
peak). ``--bf16`` runs the bfloat16 table (JAX ``dtype=bfloat16`` with float32 parameters;
PyTorch autocast) instead of float32.

    python -m benchmarks.train_step                 # the full table (~15-20 min on 2 CPU cores)
    python -m benchmarks.train_step --quick         # small models and batch, a minute or two
    python -m benchmarks.train_step --models netresdeep --batch-sizes 64
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import relujax
from benchmarks import _harness as h
from relujax._src import perf
from relujax._src.activations.memory import residual_bytes
from relujax.models import create_model

# name -> (relujax create_model kwargs, torch_models constructor and kwargs, num_classes)
MODELS: dict[str, tuple[dict[str, Any], str, dict[str, Any], int]] = {
    "netdepth": ({"name": "netdepth"}, "NetDepth", {}, 2),
    "netres": ({"name": "netres"}, "NetRes", {}, 2),
    "netresdeep_shared": (
        {"name": "netresdeep", "n_blocks": 100, "shared_blocks": True},
        "NetResDeep",
        {"n_blocks": 100, "shared_blocks": True},
        2,
    ),
    "netresdeep": (
        {"name": "netresdeep", "n_blocks": 100},
        "NetResDeep",
        {"n_blocks": 100},
        2,
    ),
    "resnet20": ({"name": "resnet20"}, "resnet20", {}, 10),
    "resnet56": ({"name": "resnet56"}, "resnet56", {}, 10),
    # small stand-ins for --quick
    "netresdeep10": ({"name": "netresdeep", "n_blocks": 10}, "NetResDeep", {"n_blocks": 10}, 2),
    "netresdeep2": ({"name": "netresdeep", "n_blocks": 2}, "NetResDeep", {"n_blocks": 2}, 2),
}
FULL = ["netdepth", "netres", "netresdeep_shared", "netresdeep", "resnet20", "resnet56"]
QUICK = ["netdepth", "netresdeep10", "resnet20"]
STACKED = ("netresdeep", "resnet")  # models with stacks of identical blocks (scan applies)


def _data(batch: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, num_classes, batch).astype(np.int32)
    return x, y


def _build(
    spec: dict[str, Any], *, fast_conv: bool | str, scan: bool, dtype, activation=None
) -> nnx.Module:
    kw = dict(spec)
    name = kw.pop("name")
    if name.startswith(STACKED):
        kw["scan_blocks"] = scan
    model = create_model(name, rngs=nnx.Rngs(0), dtype=dtype, activation=activation, **kw)
    if fast_conv:  # True: perf's defaults; a string: that kernel_grad; a dict: the options
        if isinstance(fast_conv, dict):
            perf.use_fast_conv(model, **fast_conv)
        else:
            perf.use_fast_conv(model, kernel_grad=None if fast_conv is True else fast_conv)
    model.train()
    return model


def _loss(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()


def jax_split_step(model: nnx.Module, tx, x, y, *, compiler_options=None):
    """A pure ``jax.jit`` step over ``nnx.split`` state; returns (runner, compile_s, memory).

    ``compiler_options`` go to ``jax.jit`` (``perf.compiler_options()`` is what
    ``relujax.training`` passes).
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)

    def step(params, rest, opt_state, x, y):
        def loss_fn(params, rest):
            m = nnx.merge(graphdef, params, rest, copy=True)
            loss = _loss(m(x), y)
            _, _, new_rest = nnx.split(m, nnx.Param, ...)
            return loss, new_rest

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1, 2), compiler_options=compiler_options)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    compiled, seconds = h.compile_jitted(jitted, params, rest, opt_state, xj, yj)
    state = {"s": (params, rest, opt_state)}

    def run():
        *s, loss = compiled(*state["s"], xj, yj)
        state["s"] = tuple(s)
        return loss

    return run, seconds, h.memory_analysis(compiled)


def nnx_jit_step(model: nnx.Module, tx, x, y):
    """The textbook NNX step: ``nnx.jit`` over model and ``nnx.Optimizer``."""
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return _loss(model(x), y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    t0 = time.perf_counter()
    jax.block_until_ready(step(model, optimizer, xj, yj))  # first call: trace + compile + run
    seconds = time.perf_counter() - t0
    return (lambda: step(model, optimizer, xj, yj)), seconds, None


def _torch_models():
    """The PyTorch originals, which live with the parity tests (``tests/torch_models.py``).

    Loaded from the checkout by path, without putting ``tests/`` on ``sys.path``.
    """
    path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "torch_models.py"
    if not path.is_file():
        raise FileNotFoundError(f"the PyTorch comparison needs a checkout's {path}; use --no-torch")
    spec = importlib.util.spec_from_file_location("relujax_bench_torch_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_step(ctor: str, kwargs: dict[str, Any], x, y, *, compile_: bool, bf16: bool):
    """The PyTorch original's SGD step; returns (runner, compile_s or None, saved bytes)."""
    import torch
    import torch.nn.functional as F

    torch_models = _torch_models()

    device = h.torch_device()
    torch.manual_seed(0)
    model = getattr(torch_models, ctor)(**kwargs).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    fwd = torch.compile(model) if compile_ else model
    amp_dtype = torch.bfloat16

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=bf16):
            out = fwd(xt)
        loss = F.cross_entropy(out.float(), yt)
        loss.backward()
        opt.step()
        return loss.detach()

    seconds = None
    if compile_:
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
        peak = saved[0]
    return run, seconds, peak


def bench_one(name: str, batch: int, args, *, dtype) -> list[dict[str, Any]]:
    spec, ctor, tkw, num_classes = MODELS[name]
    x, y = _data(batch, num_classes)
    tx = optax.sgd(1e-3)
    stacked = spec["name"].startswith(STACKED)
    opts = perf.compiler_options()
    # (label, fast_conv, scan, compiler options); "train" is what `python -m train` compiles.
    xla = {"native": False}  # perf's conv with XLA's convolutions only
    variants: list[tuple[str, Any, bool, Any]] = [
        ("jit", False, False, None),
        ("jit+conv(split)", {"kernel_grad": "split", "native": False}, False, None),
    ]
    if args.kernel_grad:
        variants.append(("jit+conv", {"kernel_grad": "conv", "native": False}, False, None))
        if opts is not None:
            variants.append(
                ("jit+conv(split)+opts", {"kernel_grad": "split", "native": False}, False, opts)
            )
    if opts is not None:
        variants.append(("jit+conv+opts", xla, False, opts))
    if perf.native_enabled():
        variants.append(("jit+native+opts", True, False, opts))
    if stacked:
        variants.append(("jit+conv+opts+scan", xla, True, opts))
        if perf.native_enabled():
            variants.append(("jit+native+opts+scan", True, True, opts))
    if args.impls:
        keep = set(args.impls.split(","))
        variants = [v for v in variants if v[0] in keep]
    runners, info = {}, {}
    if args.nnx_jit:
        model = _build(spec, fast_conv=False, scan=False, dtype=dtype)
        runners["nnx.jit"], c, _ = nnx_jit_step(model, tx, x, y)
        info["nnx.jit"] = {"compile_s": c, "memory": None}
    for label, fast, scan, copts in variants:
        model = _build(spec, fast_conv=fast, scan=scan, dtype=dtype)
        runners[label], c, mem = jax_split_step(model, tx, x, y, compiler_options=copts)
        info[label] = {"compile_s": c, "memory": mem}
    use_torch = not args.no_torch and h.torch_available()
    use_torch = use_torch and (not args.impls or "torch" in args.impls.split(","))
    bf16 = dtype == jnp.bfloat16
    if use_torch:
        runners["torch"], _, peak = torch_step(ctor, tkw, x, y, compile_=False, bf16=bf16)
        info["torch"] = {"compile_s": None, "torch_peak": peak}
        if args.torch_compile == "all" or name in args.torch_compile.split(","):
            try:
                r, c, peak = torch_step(ctor, tkw, x, y, compile_=True, bf16=bf16)
                runners["torch.compile"] = r
                info["torch.compile"] = {"compile_s": c, "torch_peak": peak}
            except Exception as e:  # noqa: BLE001 - inductor may be unavailable; say so
                print(f"  torch.compile failed for {name}: {type(e).__name__}: {e}"[:300])
    # settle=1: each turn runs its step once untimed first, as in a training loop (consecutive
    # steps of one model); without it PyTorch's timed call follows another library's and runs
    # 1.2x slower (RESULTS.md, "Measuring protocol").
    times = h.time_alternating(
        runners, repeats=args.repeats or (3 if args.quick else 7), settle=args.settle
    )
    rows = []
    ref = times["torch"]["median"] if "torch" in times else None
    for label, t in times.items():
        mem = info[label].get("memory")
        row = {
            "model": name,
            "batch": batch,
            "dtype": jnp.dtype(dtype).name,
            "impl": label,
            "step_ms": 1e3 * t["median"],
            "images_per_s": batch / t["median"],
            "vs_torch": None if ref is None else ref / t["median"],
            "compile_s": info[label].get("compile_s"),
            "peak_MiB": None,
            "samples": t["samples"],
        }
        if mem is not None:
            row["peak_MiB"] = (mem["temp"] + mem["argument"] + mem["output"]) / 2**20
            row["xla_memory"] = mem
        elif info[label].get("torch_peak") is not None:
            row["peak_MiB"] = info[label]["torch_peak"] / 2**20
        rows.append(row)
        print(
            f"  {name:18s} b{batch:<4d} {label:14s} {row['step_ms']:9.1f} ms "
            f"{row['images_per_s']:8.0f} img/s  vs torch {row['vs_torch'] or float('nan'):.2f}x"
            f"  compile {row['compile_s'] or float('nan'):.1f} s",
            flush=True,
        )
    return rows


RESIDUAL_ACTIVATIONS = {
    "jax.nn.relu": jax.nn.relu,
    "relujax.relu": relujax.relu,
    "relu(residual='bits')": functools.partial(relujax.relu, residual="bits"),
}


def bench_residual(args) -> list[dict[str, Any]]:
    """NetResDeep's step with each relu's residual mode: XLA memory and step time, side by side."""
    n_blocks, batch = (10, 16) if args.quick else (100, 64)
    spec = {"name": "netresdeep", "n_blocks": n_blocks}
    x, y = _data(batch, 2)
    rows = []
    opts = perf.compiler_options()
    for label, scan in (("jit+conv+opts", False), ("jit+conv+opts+scan", True)):
        runners, mems, compiles = {}, {}, {}
        for act_name, act in RESIDUAL_ACTIVATIONS.items():
            model = _build(
                spec, fast_conv={"native": False}, scan=scan, dtype=jnp.float32, activation=act
            )
            runners[act_name], compiles[act_name], mems[act_name] = jax_split_step(
                model, optax.sgd(1e-3), x, y, compiler_options=opts
            )
        times = h.time_alternating(runners, repeats=args.repeats or (3 if args.quick else 7))
        base = times["relujax.relu"]["median"]
        for act_name, t in times.items():
            mem = mems[act_name]
            row = {
                "model": f"netresdeep{n_blocks}",
                "batch": batch,
                "impl": label,
                "activation": act_name,
                "residual_B_per_elt": residual_bytes(
                    RESIDUAL_ACTIVATIONS[act_name], jnp.ones((64, 8, 8, 4), jnp.float32)
                ),
                "step_ms": 1e3 * t["median"],
                "speed_vs_relujax.relu": base / t["median"],
                "temp_MiB": None if mem is None else mem["temp"] / 2**20,
                "compile_s": compiles[act_name],
                "samples": t["samples"],
            }
            rows.append(row)
            print(
                f"  {label:14s} {act_name:22s} {row['step_ms']:8.1f} ms  "
                f"temp {row['temp_MiB'] or float('nan'):7.1f} MiB",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help=f"comma list from {sorted(MODELS)}")
    p.add_argument("--batch-sizes", default=None, help="comma list (default 64,128; quick 16)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 compute instead of float32")
    p.add_argument(
        "--torch-compile",
        default="",
        help="comma list of models to also time with torch.compile (inductor), or 'all'",
    )
    p.add_argument("--nnx-jit", action="store_true", help="also time the nnx.jit step")
    p.add_argument(
        "--impls",
        default=None,
        help="comma list of candidates to time (e.g. 'jit+conv+opts,jit+native+opts,torch')",
    )
    p.add_argument(
        "--settle",
        type=int,
        default=1,
        help="untimed calls before each timed one, per turn (default 1; 0: strict alternation)",
    )
    p.add_argument(
        "--kernel-grad",
        action="store_true",
        help="also time jit+conv (one-convolution kernel gradient) and jit+conv(split)+opts",
    )
    p.add_argument(
        "--residual",
        action="store_true",
        help="instead: NetResDeep memory/speed per relu residual mode (jax.nn, mask, bits)",
    )
    args = p.parse_args(argv)
    if args.residual:
        h.header("train_step residual modes (float32)")
        rows = bench_residual(args)
        cols = ["model", "batch", "impl", "activation", "residual_B_per_elt", "step_ms"]
        print("\n" + h.format_table(rows, cols + ["speed_vs_relujax.relu", "temp_MiB"]))
        h.write_json("train_step_residual", {"rows": rows}, quick=args.quick, out=args.out)
        return {"rows": rows}
    models = args.models.split(",") if args.models else (QUICK if args.quick else FULL)
    batches = (
        [int(b) for b in args.batch_sizes.split(",")]
        if args.batch_sizes
        else ([16] if args.quick else [64, 128])
    )
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    h.header(f"train_step ({jnp.dtype(dtype).name})")
    rows = []
    for name in models:
        for batch in batches:
            rows.extend(bench_one(name, batch, args, dtype=dtype))
    cols = ["model", "batch", "impl", "step_ms", "images_per_s", "vs_torch", "compile_s"]
    print("\n" + h.format_table(rows, cols + ["peak_MiB"]))
    suffix = "_bf16" if args.bf16 else ""
    h.write_json(
        f"train_step{suffix}",
        {"dtype": jnp.dtype(dtype).name, "rows": rows, "argv": sys.argv[1:]},
        quick=args.quick,
        out=args.out,
    )
    return {"rows": rows}


if __name__ == "__main__":
    main()
