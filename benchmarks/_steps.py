"""The training steps ``benchmarks.train_step`` times, each built the way its users build it.

* :func:`app_step`: the step ``python -m train`` runs, made by the application's own builder
  (``relujax.training.prepare_run``, compiled ahead of time as ``relujax.training.train``
  does), on a one-batch synthetic dataset already on device. The step includes what every
  application step does besides the model: gathering and normalising the batch, the masked
  loss, the metric sums. Whatever the speed policy decides (native convolutions, compile
  options, scanned stacks) is what runs.
* :func:`plain_step`: a user's own step on a model made with default arguments
  (``relujax.models.create_model(name)``): the Flax documentation's pattern, ``nnx.jit`` over
  ``nnx.value_and_grad`` and ``nnx.Optimizer``.
* :func:`torch_step`: the PyTorch original (``tests/torch_models.py``), eager or
  ``torch.compile``.

All three are plain SGD (learning rate 1e-3) on cross-entropy, BatchNorm in training mode.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness as h
from relujax._src import allocator

TORCH_MODELS = pathlib.Path(__file__).resolve().parents[1] / "tests" / "torch_models.py"


@dataclasses.dataclass(frozen=True)
class Spec:
    """A benchmarked model: ``create_model(model, **kwargs)`` and its PyTorch original."""

    model: str
    kwargs: dict[str, Any]
    torch_ctor: str
    torch_kwargs: dict[str, Any]
    num_classes: int


MODELS: dict[str, Spec] = {
    "netdepth": Spec("netdepth", {}, "NetDepth", {}, 2),
    "netres": Spec("netres", {}, "NetRes", {}, 2),
    "netresdeep_shared": Spec(
        "netresdeep", {"shared_blocks": True}, "NetResDeep", {"shared_blocks": True}, 2
    ),
    "netresdeep": Spec("netresdeep", {}, "NetResDeep", {}, 2),  # 100 independent blocks
    "resnet20": Spec("resnet20", {}, "resnet20", {}, 10),
    "resnet56": Spec("resnet56", {}, "resnet56", {}, 10),
    # small stand-ins for --quick and the tests
    "netresdeep10": Spec("netresdeep", {"n_blocks": 10}, "NetResDeep", {"n_blocks": 10}, 2),
    "netresdeep2": Spec("netresdeep", {"n_blocks": 2}, "NetResDeep", {"n_blocks": 2}, 2),
}

# Activations the app step can be built with besides create_model's names (residual modes).
ACTIVATIONS: dict[str, Callable[..., Any]] = {}


def _activation(name: str) -> Any:
    """A name for ``create_model(activation=...)``, or one of the callables in ACTIVATIONS."""
    if not ACTIVATIONS:
        import relujax

        ACTIVATIONS["jax.nn.relu"] = jax.nn.relu
        ACTIVATIONS["relu(residual='bits')"] = functools.partial(relujax.relu, residual="bits")
    return ACTIVATIONS.get(name, name)


def spec(name: str) -> Spec:
    """``MODELS[name]``, or a ValueError that lists the known names."""
    if name not in MODELS:
        raise ValueError(f"--models: unknown model {name!r}; expected some of {sorted(MODELS)}")
    return MODELS[name]


@dataclasses.dataclass
class Step:
    """A ready step: ``run()`` does one step and returns what to wait for."""

    run: Callable[[], Any]
    compile_s: float | None
    # XLA: arguments + outputs + temporaries. PyTorch: the CUDA allocator's peak; on CPU the
    # bytes autograd saves for backward, a lower bound of its peak.
    peak_bytes: int | None
    memory: dict[str, int] | None = None  # XLA's compiled memory analysis


def data(batch: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal CIFAR-shaped images (NHWC float32) and integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    return x, rng.integers(0, num_classes, batch).astype(np.int32)


def _xla_peak(memory: dict[str, int] | None) -> int | None:
    if memory is None:
        return None
    return memory["temp"] + memory["argument"] + memory["output"]


def app_step(
    name: str,
    batch: int,
    *,
    dtype: str = "float32",
    activation: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> Step:
    """``python -m train``'s step for model ``name`` at ``batch`` images (plain SGD)."""
    from relujax import data as rdata
    from relujax.training import TrainConfig, prepare_run

    s = spec(name)
    kwargs = {**s.kwargs, **(model_kwargs or {})}
    if activation is not None:
        kwargs["activation"] = _activation(activation)
    config = TrainConfig(
        model=s.model,
        model_kwargs=kwargs,
        batch_size=batch,
        optimizer="sgd",
        lr=1e-3,
        dtype=dtype,
        epochs=1,
    )
    ds = rdata.load_dataset("synthetic", num_classes=s.num_classes, n_train=batch, n_test=batch)
    app = prepare_run(config, ds)
    state = list(app.state.tree().values())
    args = (*app.train_args(*app.epoch_table(0)), app.number(0), app.number(0))
    compiled, seconds = h.compile_jitted(app.steps.train, *state, *args)
    allocator.release_free_memory()  # as the training application does after compiling

    def run():
        state[:] = compiled(*state, *args)  # params, rest, opt_state, metrics (donated)
        return state[3]

    memory = h.memory_analysis(compiled)
    return Step(run, seconds, _xla_peak(memory), memory)


PLAIN_JITS = ("nnx.jit", "cached", "jax.jit")


def plain_step(
    name: str,
    batch: int,
    *,
    dtype: str = "float32",
    model_kwargs: dict[str, Any] | None = None,
    jit: str = "nnx.jit",
) -> Step:
    """A user's step on ``create_model(name)`` (default arguments but ``model_kwargs``).

    ``jit`` says how the user compiles it: ``"nnx.jit"``, Flax's documented pattern (``nnx.jit``
    over ``nnx.value_and_grad`` and ``nnx.Optimizer``; Flax walks the model's graph on every call);
    ``"cached"``, the same function through ``nnx.cached_partial`` (Flax's remedy for that
    per-call cost); ``"jax.jit"``, ``jax.jit`` over the ``nnx.split`` state with optax.
    """
    import optax
    from flax import nnx

    from relujax.models import create_model

    if jit not in PLAIN_JITS:
        raise ValueError(f"plain_step: jit must be one of {PLAIN_JITS}, got {jit!r}")
    s = spec(name)
    kwargs = {**s.kwargs, **(model_kwargs or {})}
    if dtype != "float32":
        kwargs["dtype"] = jnp.dtype(dtype)
    model = create_model(s.model, rngs=nnx.Rngs(0), **kwargs)
    model.train()
    x, y = (jnp.asarray(a) for a in data(batch, s.num_classes))

    def loss_of(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()

    if jit == "jax.jit":
        return _split_step(model, optax.sgd(1e-3), loss_of, x)
    optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda model: loss_of(model(x)))(model)
        optimizer.update(model, grads)
        return loss

    # The executable compiled here is the one the first call reuses (it only traces again).
    compiled, seconds = h.compile_jitted(step, model, optimizer, x)
    memory = h.memory_analysis(compiled)
    if jit == "cached":
        cached = nnx.cached_partial(step, model, optimizer)
        return Step(lambda: cached(x), seconds, _xla_peak(memory), memory)
    return Step(lambda: step(model, optimizer, x), seconds, _xla_peak(memory), memory)


def _split_step(model: Any, tx: Any, loss_of: Callable, x: jax.Array) -> Step:
    """``jax.jit`` over a model's ``nnx.split`` state: params and batch statistics donated."""
    import optax
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def step(params, rest, opt_state, x):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest, copy=True)
            return loss_of(m(x)), nnx.state(m, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1, 2))
    state = [params, rest, tx.init(params)]
    compiled, seconds = h.compile_jitted(jitted, *state, x)

    def run():
        out = compiled(*state, x)  # the old state is donated
        state[:] = out[:3]
        return out[3]

    memory = h.memory_analysis(compiled)
    return Step(run, seconds, _xla_peak(memory), memory)


@functools.cache
def _torch_models() -> Any:
    """The PyTorch originals, loaded by path from the checkout's ``tests/torch_models.py``."""
    if not TORCH_MODELS.is_file():
        raise FileNotFoundError(
            f"the PyTorch comparison needs a checkout's {TORCH_MODELS}; use --no-torch"
        )
    spec_ = importlib.util.spec_from_file_location("relujax_bench_torch_models", TORCH_MODELS)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def torch_step(name: str, batch: int, *, dtype: str = "float32", compile_: bool = False) -> Step:
    """The PyTorch original's SGD step (bfloat16: autocast), eager or ``torch.compile``."""
    s = spec(name)
    return torch_ctor_step(
        s.torch_ctor, s.torch_kwargs, batch, s.num_classes, dtype=dtype, compile_=compile_
    )


def torch_ctor_step(
    ctor: str,
    kwargs: dict[str, Any],
    batch: int,
    num_classes: int,
    *,
    dtype: str = "float32",
    compile_: bool = False,
) -> Step:
    """:func:`torch_step` for ``tests/torch_models.py``'s class ``ctor`` built with ``kwargs``."""
    import torch
    import torch.nn.functional as F

    device = h.torch_device()
    torch.manual_seed(0)
    model = getattr(_torch_models(), ctor)(**kwargs).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = data(batch, num_classes)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    fwd = torch.compile(model) if compile_ else model
    bf16 = dtype == "bfloat16"

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = fwd(xt)
        loss = F.cross_entropy(out.float(), yt)
        loss.backward()
        opt.step()
        return loss.detach()

    seconds = None
    if compile_:
        t0 = time.perf_counter()
        h.block(run())
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
    return Step(run, seconds, peak)


IMPLS = (
    "app",
    "app[ACTIVATION]",
    "app-direct",
    "plain",
    "plain[cached]",
    "plain[jax.jit]",
    "torch",
    "torch.compile",
)


def check_impl(impl: str) -> str:
    """``impl`` if it names a step (see IMPLS), else a ValueError that lists them."""
    if impl in IMPLS or (impl.startswith("app[") and impl.endswith("]") and len(impl) > 5):
        return impl
    raise ValueError(f"--impls: unknown step {impl!r}; expected some of {list(IMPLS)}")


def build(impl: str, name: str, batch: int, *, dtype: str = "float32") -> Step:
    """The step ``impl`` names (one of IMPLS) for model ``name`` at ``batch`` images."""
    check_impl(impl)
    if impl.startswith("torch"):
        return torch_step(name, batch, dtype=dtype, compile_=impl == "torch.compile")
    if impl == "app-direct":
        # Traced, lowered and compiled with the native kernels' Winograd paths off.
        with h.direct_convs():
            return app_step(name, batch, dtype=dtype)
    if impl.startswith("app"):
        activation = impl[4:-1] if impl.startswith("app[") else None
        return app_step(name, batch, dtype=dtype, activation=activation)
    jit = impl[6:-1] if impl.startswith("plain[") else "nnx.jit"
    return plain_step(name, batch, dtype=dtype, jit=jit)
