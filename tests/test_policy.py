"""relujax.policy: one place decides what runs; default models follow it in every AD mode."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import relujax.policy as policy
from relujax._src import native, perf
from relujax.models import NetResDeep

KEYS = {
    "backend",
    "conv",
    "native",
    "native_isa",
    "native_reason",
    "winograd",
    "compiler_options",
    "scan_blocks",
    "fast_pool",
    "allocator",
}


@pytest.mark.parametrize("backend", ["gpu", "tpu", "cuda"])
def test_accelerators_get_lax_and_scan(backend):
    d = policy.describe(backend)
    assert set(d) == KEYS
    assert d["backend"] in ("gpu", "tpu")
    assert (d["conv"], d["native"], d["scan_blocks"], d["fast_pool"]) == ("lax", False, True, False)
    assert d["compiler_options"] is None and "XLA" in d["native_reason"]
    json.dumps(d)


def test_cpu_choices():
    d = policy.describe("cpu")
    assert (d["conv"], d["scan_blocks"], d["fast_pool"]) == ("relujax", False, True)
    on_cpu = jax.default_backend() == "cpu"
    expect = on_cpu and jax.device_count() == 1 and native.available()
    assert d["native"] == expect == policy.native_convs("cpu")
    assert (d["native_isa"] == native.default_isa()) if expect else d["native_reason"]
    assert d["winograd"] == (expect and native.winograd_default())
    assert "cpu: conv=relujax" in str(policy.current("cpu"))
    assert ("Winograd" in str(policy.current("cpu"))) == d["winograd"]


def test_winograd_switch_shows_in_the_policy(monkeypatch):
    monkeypatch.setenv("RELUJAX_NATIVE_WINOGRAD", "0")
    assert not policy.describe("cpu")["winograd"]
    assert not policy.describe("gpu")["winograd"]


def test_override_and_bad_backend():
    before = policy.default_backend()
    with policy.override("tpu"):
        assert policy.default_backend() == "tpu" and policy.scan_blocks()
        assert policy.describe()["backend"] == "tpu"
    assert policy.default_backend() == before
    with pytest.raises(ValueError, match="backend must be one of"):
        policy.describe("metal")


def test_models_follow_the_policy():
    def convs(model):
        mods = nnx.iter_modules(model)
        return [m.conv_general_dilated for _, m in mods if isinstance(m, nnx.Conv)]

    model = NetResDeep(n_blocks=2, n_chans1=8, rngs=nnx.Rngs(0))
    want = perf.conv_general_dilated if policy.fast_conv() else lax.conv_general_dilated
    assert all(f is want for f in convs(model))
    assert model.resblocks.scan == policy.scan_blocks()
    with policy.override("gpu"):
        model = NetResDeep(n_blocks=2, n_chans1=8, rngs=nnx.Rngs(0))
    assert all(f is lax.conv_general_dilated for f in convs(model)) and model.resblocks.scan


def test_user_nnx_jit_step_runs_what_the_app_runs():
    # The textbook NNX step on a default model: relujax's convolution (native where the
    # policy allows), as python -m train's step.
    import optax

    # 16 channels: native kernels apply at every vector width (4, 8, 16 lanes); 8 would not
    # on AVX-512.
    model = NetResDeep(n_blocks=2, n_chans1=16, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3), jnp.float32)
    y = jnp.array([0, 1, 0, 1], jnp.int32)

    def loss_fn(model, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads)
        return loss

    gd, state = nnx.split(model)
    grad = jax.jit(lambda s: jax.grad(lambda s: loss_fn(nnx.merge(gd, s), x, y))(s))
    assert ("relujax_conv" in grad.lower(state).as_text()) == policy.native_convs()
    with policy.override("gpu"):  # the same model with lax's convolutions
        stock = NetResDeep(n_blocks=2, n_chans1=16, scan_blocks=False, rngs=nnx.Rngs(0))
    gd_stock = nnx.graphdef(stock)
    want = jax.jit(lambda s: jax.grad(lambda s: loss_fn(nnx.merge(gd_stock, s), x, y))(s))
    for a, b in zip(jax.tree.leaves(grad(state)), jax.tree.leaves(want(state)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    assert np.isfinite(float(step(model, optimizer, x, y)))


def _pair(scan: bool):
    model = NetResDeep(n_blocks=2, n_chans1=8, scan_blocks=scan, rngs=nnx.Rngs(0))
    model.eval()
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    return lambda p, x: nnx.merge(gd, p, rest)(x), params


def test_scanned_model_forward_mode_hvp_and_vmap():
    # jvp through NetResDeep(scan_blocks=True) (the old custom_vjp convolution refused it),
    # a Hessian-vector product and vmap, equal to the unrolled model's.
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
    tx = jax.random.normal(jax.random.key(2), x.shape, jnp.float32)

    def modes(scan):
        f, params = _pair(scan)

        def loss(p):
            return jnp.sum(f(p, x) ** 2)

        g = jax.grad(loss)(params)
        hg = jax.jvp(jax.grad(loss), (params,), (g,))[1]
        # g . H g: the parameter trees differ (stacked vs per block), this scalar does not
        pairs = zip(jax.tree.leaves(g), jax.tree.leaves(hg), strict=True)
        ghg = sum(jnp.vdot(a, b) for a, b in pairs)
        return {
            "jvp": jax.jvp(lambda x: f(params, x), (x,), (tx,)),
            "gHg": ghg,
            "vmap": jax.vmap(lambda xi: f(params, xi[None]))(x),
        }

    got, want = jax.jit(lambda: modes(True))(), jax.jit(lambda: modes(False))()
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = float(jnp.max(jnp.abs(b))) or 1.0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)


def test_policy_jit_adds_the_compile_options(monkeypatch):
    seen = {}
    real = jax.jit

    def spy(fun, **kwargs):
        seen.update(kwargs)
        return real(fun, **kwargs)

    monkeypatch.setattr(jax, "jit", spy)
    out = policy.jit(lambda v: v * 2, donate_argnums=())(jnp.ones(2, jnp.float32))
    np.testing.assert_array_equal(out, [2.0, 2.0])
    assert seen.get("compiler_options") == policy.compiler_options()
    assert seen["donate_argnums"] == ()


def test_training_run_prints_and_records_the_policy(tmp_path):
    from relujax.training import TrainConfig, train

    config = TrainConfig(
        model="netdepth",
        model_kwargs={"n_chans1": 4},
        dataset="synthetic",
        dataset_kwargs={"n_train": 32, "n_test": 16},
        epochs=1,
        batch_size=16,
        progress=False,
        workdir=str(tmp_path),
    )
    lines: list[str] = []
    summary = train(config, log=lines.append)
    assert [line for line in lines if line.startswith("speed policy:")] == [
        f"speed policy: {policy.current()}"
    ]
    assert summary["policy"] == policy.describe()
    assert json.loads((tmp_path / "summary.json").read_text())["policy"] == policy.describe()


def test_docstring_examples_run():
    import doctest
    import importlib

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        for name in ("relujax.policy", "relujax._src.policy", "relujax._src.perf"):
            module = importlib.import_module(name)
            for test in finder.find(module, module.__name__):
                runner.run(test)
    finally:
        jax.config.update("jax_enable_x64", previous)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10 and result.failed == 0


def test_compiler_options_per_backend():
    assert policy.compiler_options("gpu") is None and policy.compiler_options("tpu") is None
    opts = policy.compiler_options("cpu")
    if opts is None:  # only where this XLA rejects the (experimental) option
        pytest.skip("this XLA:CPU does not accept the option")

    def conv(x, w):
        return lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    x, w = jnp.ones((4, 8, 8, 32)), jnp.ones((3, 3, 32, 32))
    np.testing.assert_allclose(
        jax.jit(conv, compiler_options=opts)(x, w), jax.jit(conv)(x, w), rtol=1e-6
    )
    if jax.default_backend() == "cpu":  # the convolution is no longer a YNNPACK fusion
        hlo = jax.jit(conv, compiler_options=opts).lower(x, w).compile().as_text()
        assert "__ynn_fusion" not in hlo and " convolution(" in hlo
