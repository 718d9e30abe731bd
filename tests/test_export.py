"""GPU and TPU without the hardware: training steps lower for ``cuda`` and ``tpu``.

For every model in the registry, the training step that ``python -m train`` builds, with the
policy for those backends (scanned stacks, XLA's convolutions), is exported with ``jax.export``
for both platforms; so is a user's plain step on a model built here with default arguments
(on CPU: relujax's convolution primitive, which must lower to XLA's convolution there). No
CPU-only custom call (relujax's native kernels, LAPACK, DUCC) may appear. Lowering only: the
models are built abstractly (``nnx.eval_shape``), nothing is compiled or run.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from relujax import policy
from relujax._src.data.pipeline import get_batch
from relujax._src.training import build, optim
from relujax._src.training import config as rconfig
from relujax._src.training import steps as rsteps
from relujax.models import MODELS, NetResDeep, resnet20

PLATFORMS = ("cuda", "tpu")
CPU_ONLY = re.compile(r"relujax|lapack|ducc|cpu", re.IGNORECASE)
S = jax.ShapeDtypeStruct
SMALL = {"netresdeep": {"n_blocks": 3}}  # depth does not change what a scanned stack lowers to


def _custom_calls(text: str) -> set[str]:
    return set(re.findall(r"custom_call @([\w.]+)", text)) | set(
        re.findall(r'call_target_name = "([^"]+)"', text)
    )


def _app_train_step(name: str, backend: str):
    """The app's jitted train step for ``name`` under ``backend``'s policy, and its arguments."""
    shape = {"simplenn": (4,), "mlp": (784,)}.get(name, (32, 32, 3))
    with policy.override(backend):
        config = rconfig.TrainConfig(
            model=name, dataset="synthetic", batch_size=2, model_kwargs=SMALL.get(name, {})
        )
        model = nnx.eval_shape(lambda: build.build_model(config, 10))
        train_gd, eval_gd, params, rest = build.split_model(model)
        tx, _ = optim.make_optimizer(config, model, params, 2)
        if len(shape) == 3:
            batch = get_batch
        else:  # feature vectors: the rows as they are

            def batch(x, y, idx, *, mean, std, dtype, augment_key):
                del mean, std, augment_key
                return x[idx].astype(dtype), y[idx]

        c = shape[-1]
        steps = rsteps.make_steps(
            train_gd, eval_gd, tx, get_batch=batch, mean=jnp.zeros(c), std=jnp.ones(c)
        )
    state = [params, rest, jax.eval_shape(tx.init, params), rsteps.zero_metrics()]
    args = jax.tree.map(lambda a: S(jnp.shape(a), a.dtype), state)
    args += [
        S((4, *shape), jnp.uint8 if len(shape) == 3 else jnp.float32),
        S((4,), jnp.int32),
        S((2, 2), jnp.int32),
        S((2, 2), jnp.bool_),
        S((), jnp.int32),
        S((), jnp.int32),
    ]
    return steps.train, args


@pytest.mark.parametrize("name", sorted(MODELS))
def test_app_step_lowers_for_gpu_and_tpu(name):
    step, args = _app_train_step(name, "gpu")
    exported = jax.export.export(step, platforms=PLATFORMS)(*args)  # rejects unknown calls
    assert exported.platforms == PLATFORMS
    text = exported.mlir_module()
    assert "stablehlo.convolution" in text or name in ("simplenn", "mlp")
    assert not {t for t in _custom_calls(text) if CPU_ONLY.search(t)}, _custom_calls(text)


def _user_step(model: nnx.Module):
    """A user's plain step: jit over the split model and optimizer, no compile options."""
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    args = (state, S((2, 32, 32, 3), jnp.float32), S((2,), jnp.int32))
    return step, args


@pytest.mark.parametrize("build", [NetResDeep, resnet20], ids=["netresdeep", "resnet20"])
def test_user_step_lowers_everywhere(build):
    # 16 channels: a multiple of every vector width the native kernels take (4, 8, 16 lanes),
    # so they apply on any ISA; with 8 they would not on AVX-512.
    kw = {"n_blocks": 2, "n_chans1": 16} if build is NetResDeep else {}
    model = build(**kw, rngs=nnx.Rngs(0))  # default arguments: the policy of this machine
    step, args = _user_step(model)
    cpu = step.lower(*args).as_text()
    assert ("relujax_conv" in cpu) == policy.native_convs()  # what runs here
    exported = jax.export.export(step, platforms=PLATFORMS)(*args)
    text = exported.mlir_module()
    assert "stablehlo.convolution" in text
    assert not {t for t in _custom_calls(text) if CPU_ONLY.search(t)}, _custom_calls(text)
