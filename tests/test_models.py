"""relujax.models: shapes, parameter counts, modes, activations, shared/scanned stacks, monitor."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import relujax.models as rm
from relujax._src.models.monitor import activation_factory
from relujax._src.models.resnet_imagenet import _Block
from relujax.nn import PReLU, ReLU

X = jax.random.normal(jax.random.key(0), (2, 32, 32, 3), jnp.float32)


def n_params(model) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract(ctor, **kw):
    return nnx.eval_shape(lambda: ctor(rngs=nnx.Rngs(0), **kw))


def test_public_api():
    assert sorted(rm.__all__) == sorted(n for n in dir(rm) if not n.startswith("_"))


@pytest.mark.parametrize(
    "name,kwargs,count",
    [
        ("net", {}, 18_090),
        ("netwidth", {}, 38_386),
        ("netdropout", {}, 38_386),
        ("netbatchnorm", {}, 38_482),
        ("netdepth", {}, 16_130),
        ("netres", {}, 16_130),
        ("netresdeep", {"n_blocks": 100, "shared_blocks": True}, 75_810),
        ("netresdeep", {"n_blocks": 7, "shared_blocks": True}, 75_810),
        ("netresdeep", {"n_blocks": 100}, 994_530),
        ("netresdeep", {"n_blocks": 10}, 159_330),
        ("netresdeep", {"n_blocks": 10, "scan_blocks": True}, 159_330),
        ("resnet20", {}, 269_722),
        ("resnet32", {}, 464_154),
        ("resnet44", {}, 658_586),
        ("resnet56", {}, 853_018),
        ("resnet110", {}, 1_727_962),
        ("resnet110", {"scan_blocks": True}, 1_727_962),
        ("resnet18", {}, 11_689_512),
        ("resnet34", {}, 21_797_672),
        ("resnet50", {}, 25_557_032),
        ("resnet50", {"scan_blocks": True}, 25_557_032),
    ],
)
def test_parameter_counts(name, kwargs, count):
    model = nnx.eval_shape(lambda: rm.create_model(name, rngs=nnx.Rngs(0), **kwargs))
    assert n_params(model) == count


@pytest.mark.parametrize(
    "name,shape,out",
    [
        ("simplenn", (5, 4), (5, 2)),
        ("mlp", (32, 784), (32, 10)),
        ("net", (2, 32, 32, 3), (2, 2)),
        ("netwidth", (2, 32, 32, 3), (2, 2)),
        ("netdropout", (2, 32, 32, 3), (2, 2)),
        ("netbatchnorm", (2, 32, 32, 3), (2, 2)),
        ("netdepth", (2, 32, 32, 3), (2, 2)),
        ("netres", (2, 32, 32, 3), (2, 2)),
        ("netresdeep", (2, 32, 32, 3), (2, 2)),
        ("resnet20", (2, 32, 32, 3), (2, 10)),
        ("resnet18", (2, 64, 64, 3), (2, 1000)),
        ("resnet34", (2, 64, 64, 3), (2, 1000)),
        ("resnet50", (2, 224, 224, 3), (2, 1000)),
    ],
)
def test_output_shapes(name, shape, out):
    kwargs = {"n_blocks": 3} if name == "netresdeep" else {}

    def forward():
        model = rm.create_model(name, rngs=nnx.Rngs(0), **kwargs)
        return model(jnp.zeros(shape, jnp.float32))

    y = jax.eval_shape(forward)
    assert y.shape == out and y.dtype == jnp.float32


def test_num_classes_and_dtype():
    model = rm.create_model("netdepth", num_classes=10, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = model(X)
    assert y.shape == (2, 10) and y.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    model = rm.create_model("netbatchnorm", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert model(X).dtype == jnp.bfloat16
    assert rm.create_model("mlp", num_classes=3, rngs=nnx.Rngs(0))(jnp.ones((1, 784))).shape == (
        1,
        3,
    )


def test_create_model_errors():
    with pytest.raises(ValueError, match=r"create_model: unknown model name 'resnet19'.*resnet18"):
        rm.create_model("resnet19", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"NetDepth: unknown activation name 'swish'"):
        rm.NetDepth(activation="swish", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"NetDepth: activation class int is not an nnx.Module"):
        rm.NetDepth(activation=int, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="NetResDeep: n_blocks must be an int >= 1, got 0"):
        rm.NetResDeep(n_blocks=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="CifarResNet: depth must be 6n \\+ 2"):
        rm.CifarResNet(21, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="NetDropout: expected dropout probability"):
        rm.NetDropout(p=1.0, rngs=nnx.Rngs(0))


def test_activation_forms():
    # A module class gives every layer its own instance (PReLU: own parameters).
    model = abstract(rm.NetDepth, activation=PReLU)
    assert n_params(model) == 16_130 + 4
    assert model.act1.fn is not model.act2.fn
    # A name works the same way; an instance is shared; a function is used as is.
    assert n_params(abstract(rm.NetDepth, activation="prelu")) == 16_130 + 4
    shared = PReLU()
    model = rm.NetDepth(activation=shared, rngs=nnx.Rngs(0))
    assert model.act1.fn is shared and model.act4.fn is shared and n_params(model) == 16_131
    a = rm.NetDepth(activation=jax.nn.relu, rngs=nnx.Rngs(0))(X)
    b = rm.NetDepth(activation=ReLU, rngs=nnx.Rngs(0))(X)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Book defaults: tanh for Net..NetBatchNorm, relu for NetDepth and the ResNets.
    assert rm.Net(rngs=nnx.Rngs(0)).act1.fn is jnp.tanh
    assert isinstance(abstract(rm.resnet20).act1.fn, ReLU)


def test_rrelu_model_train_eval():
    model = rm.NetDepth(activation="rrelu", rngs=nnx.Rngs(0))
    assert not np.array_equal(model(X), model(X))
    model.eval()
    np.testing.assert_array_equal(model(X), model(X))


def test_batchnorm_train_eval():
    bn = rm.BatchNorm(3, momentum=0.1)
    x = jax.random.normal(jax.random.key(1), (4, 5, 5, 3), jnp.float32) * 2.0 + 1.0
    y = bn(x)  # training mode: batch statistics, running ones updated as PyTorch
    xn = np.asarray(x, np.float64).reshape(-1, 3)
    np.testing.assert_allclose(
        y.reshape(-1, 3), (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5), atol=1e-5
    )
    np.testing.assert_allclose(bn.mean[...], 0.1 * xn.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
    bn.eval()
    before = np.asarray(bn.mean[...])
    y = bn(x)
    np.testing.assert_array_equal(bn.mean[...], before)
    expected = (xn - before) / np.sqrt(np.asarray(bn.var[...]) + 1e-5)
    np.testing.assert_allclose(y.reshape(-1, 3), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"BatchNorm: expected 3 channels .* \(2, 4\)"):
        bn(jnp.ones((2, 4)))


def test_dropout2d_train_eval():
    model = rm.NetDropout(p=0.5, rngs=nnx.Rngs(0))
    h = jnp.ones((8, 4, 4, 32), jnp.float32)
    y = np.asarray(model.conv1_dropout(h))
    per_channel = y.reshape(8, 16, 32)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))  # whole channels dropped
    assert 0.3 < (per_channel[:, 0] == 0).mean() < 0.7
    model.eval()
    np.testing.assert_array_equal(model.conv1_dropout(h), h)
    np.testing.assert_array_equal(model(X), model(X))


def test_shared_blocks_semantics():
    model = rm.NetResDeep(n_chans1=8, n_blocks=4, shared_blocks=True, rngs=nnx.Rngs(0))
    block = model.resblocks.block
    h = jax.random.normal(jax.random.key(2), (2, 16, 16, 8), jnp.float32)
    ref = nnx.clone(block)
    expected = h
    for _ in range(4):
        expected = ref(expected)  # the SAME block, its BN statistics updated 4 times
    np.testing.assert_allclose(model.resblocks(h), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(block.batch_norm.mean[...], ref.batch_norm.mean[...], rtol=1e-6)
    assert not np.allclose(block.batch_norm.mean[...], 0.1 * 0)  # stats did move


@pytest.mark.parametrize("shared", [False, True], ids=["independent", "shared"])
def test_scan_equals_unrolled(shared):
    kw = dict(n_chans1=8, n_blocks=3, shared_blocks=shared)
    a = rm.NetResDeep(scan_blocks=False, rngs=nnx.Rngs(0), **kw)
    b = rm.NetResDeep(scan_blocks=True, rngs=nnx.Rngs(0), **kw)

    def loss(m):
        return jnp.sum(m(X) ** 2)

    la, ga = nnx.value_and_grad(loss)(a)
    lb, gb = nnx.jit(nnx.value_and_grad(loss))(b)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    if shared:
        pairs = [(ga["resblocks"]["block"], gb["resblocks"]["block"])]
    else:
        stacked = jax.tree.leaves(gb["resblocks"]["stacked"])
        per_block = [jax.tree.leaves(ga["resblocks"]["blocks"][i]) for i in range(3)]
        pairs = [
            (np.stack(x), y) for x, y in zip(zip(*per_block, strict=True), stacked, strict=True)
        ]
    for x, y in pairs:
        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_dead_unit_monitor_off_by_default():
    model = rm.NetDepth(rngs=nnx.Rngs(0))
    assert not jax.tree.leaves(nnx.state(model, rm.DeadUnitStats))
    assert rm.dead_unit_stats(model) == {}


def test_dead_unit_monitor_values_and_jit():
    model = rm.SimpleNN(in_features=4, hidden=6, rngs=nnx.Rngs(0))
    model.fc1.kernel[...] = jnp.zeros((4, 6), jnp.float32)
    model.fc1.bias[...] = jnp.array([-1.0, -1.0, 0.0, 1.0, 1.0, 1.0], jnp.float32)
    rm.set_monitor(model, True)

    @nnx.jit
    def step(model, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.sum(m(x)))(model)
        return loss, rm.dead_unit_stats(model)

    _, stats = step(model, jnp.ones((8, 4), jnp.float32))
    # units 0, 1 (negative) and 2 (exactly 0, relu'(0) = 0) are flat for every sample
    np.testing.assert_allclose(stats["act"]["flat"], 0.5)
    np.testing.assert_allclose(stats["act"]["dead_channels"], 0.5)
    rm.set_monitor(model, False)
    assert rm.dead_unit_stats(model) == {}
    assert not jax.tree.leaves(nnx.state(model, rm.DeadUnitStats))


def test_dead_unit_monitor_activations():
    x = jnp.linspace(-10.0, 10.0, 8, dtype=jnp.float32).reshape(2, 4)
    leaky = rm.Activation(lambda v: jax.nn.leaky_relu(v, 0.01))
    tanh = rm.Activation(jnp.tanh)
    for layer in (leaky, tanh):
        rm.set_monitor(layer, True)
        layer(x)
    assert float(rm.dead_unit_stats(leaky)[""]["flat"]) == 0.0  # slope 0.01 is never flat
    assert float(rm.dead_unit_stats(tanh)[""]["flat"]) == 0.75  # |x| >= 4.29: saturated


def test_dead_unit_monitor_scanned_stack():
    model = rm.NetResDeep(n_chans1=8, n_blocks=3, scan_blocks=True, rngs=nnx.Rngs(0))
    rm.set_monitor(model)
    nnx.jit(lambda m, x: m(x))(model, X)
    stats = rm.dead_unit_stats(model)
    assert {"act1", "act2", "resblocks/stacked/act[2]"} <= set(stats)
    assert all(0.0 <= float(v["flat"]) <= 1.0 for v in stats.values())


def _padded(x_real, n_pad):
    """A padded batch as the training loop builds it: real rows, then repeats of valid rows."""
    extra = x_real[jnp.arange(n_pad) % x_real.shape[0]][::-1] * 3.0 + 1.0
    padded = jnp.concatenate([x_real, extra])
    mask = jnp.arange(padded.shape[0]) < x_real.shape[0]
    return padded, mask


def _stats(model):
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def test_batchnorm_mask_uses_real_rows_only():
    x = jax.random.normal(jax.random.key(3), (5, 4, 4, 3), jnp.float32) * 2.0 + 1.0
    xp, mask = _padded(x, 3)
    bn, ref = rm.BatchNorm(3), rm.BatchNorm(3)
    y_ref = ref(x)
    y = bn(xp, mask=mask)
    np.testing.assert_allclose(y[:5], y_ref, rtol=1e-5, atol=1e-5)
    xn = np.asarray(x, np.float64).reshape(-1, 3)  # PyTorch on the 5 real rows, n = 5 * 16
    np.testing.assert_allclose(bn.mean[...], 0.1 * xn.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
    unmasked = rm.BatchNorm(3)
    unmasked(xp)  # without the mask the padding leaks into the statistics
    assert not np.allclose(unmasked.mean[...], bn.mean[...], rtol=1e-3)
    # A batch with no real row leaves the running statistics alone; eval mode ignores the mask.
    before = _stats(bn)
    assert np.all(np.isfinite(bn(xp, mask=jnp.zeros(8, bool))))
    np.testing.assert_array_equal(_stats(bn), before)
    bn.eval()
    np.testing.assert_array_equal(bn(xp, mask=mask), bn(xp))
    with pytest.raises(TypeError, match=r"BatchNorm: mask must be a bool array .* int32"):
        bn(xp, mask=jnp.ones(8, jnp.int32))
    with pytest.raises(ValueError, match=r"BatchNorm: mask must have shape \(8,\).* \(5,\)"):
        bn(xp, mask=jnp.ones(5, bool))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("netbatchnorm", {"n_chans1": 8}),
        ("netresdeep", {"n_chans1": 8, "n_blocks": 2, "scan_blocks": False}),
        ("netresdeep", {"n_chans1": 8, "n_blocks": 2, "scan_blocks": True}),
        ("netresdeep", {"n_chans1": 8, "n_blocks": 2, "shared_blocks": True, "scan_blocks": True}),
        ("resnet20", {}),
    ],
    ids=["netbatchnorm", "netresdeep-unrolled", "netresdeep-scanned", "netresdeep-shared", "r20"],
)
def test_masked_padded_batch_equals_real_rows(name, kwargs):
    """Train mode: model(padded, mask) gives the real rows' logits and running stats of
    model(real rows); without the mask the statistics differ."""
    model = rm.create_model(name, rngs=nnx.Rngs(0), **kwargs)
    ref, unmasked = nnx.clone(model), nnx.clone(model)
    x = jax.random.normal(jax.random.key(4), (3, 32, 32, 3), jnp.float32)
    xp, mask = _padded(x, 2)
    logits = model(xp, mask=mask)
    np.testing.assert_allclose(logits[:3], ref(x), rtol=1e-4, atol=1e-5)
    stats, ref_stats = _stats(model), _stats(ref)
    assert len(stats) == len(ref_stats) > 0
    for a, b in zip(stats, ref_stats, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    unmasked(xp)
    leaked = zip(_stats(unmasked), ref_stats, strict=True)
    assert not all(np.allclose(a, b, rtol=1e-3) for a, b in leaked)


def test_every_model_takes_a_mask_keyword():
    for name in rm.MODELS:
        model = abstract(rm.MODELS[name])
        param = inspect.signature(type(model).__call__).parameters.get("mask")
        assert param is not None, name
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None, name
    mask = jnp.array([True, False])
    x = jnp.ones((2, 4), jnp.float32)
    simple = rm.SimpleNN(rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(simple(x, mask=mask), simple(x))
    net = rm.NetDepth(n_chans1=8, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(net(X, mask=mask), net(X))


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_imagenet_block_masked_padded_batch(kind):
    """The ImageNet blocks' BatchNorms, the downsample one included, see the real rows only."""
    kw = dict(dtype=None, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    block = _Block(
        kind,
        8,
        4 if kind == "bottleneck" else 16,
        2,
        act=activation_factory(None, "relu", where="test"),
        kw=kw,
    )
    assert block.downsample is not None
    ref = nnx.clone(block)
    x = jax.random.normal(jax.random.key(5), (3, 8, 8, 8), jnp.float32)
    xp, mask = _padded(x, 2)
    np.testing.assert_allclose(block(xp, mask=mask)[:3], ref(x), rtol=1e-5, atol=1e-5)
    stats, ref_stats = _stats(block), _stats(ref)
    assert len(stats) == len(ref_stats) == (4 if kind == "bottleneck" else 3) * 2
    for a, b in zip(stats, ref_stats, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
