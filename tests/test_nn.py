"""relujax.nn: activation modules, their registry, PReLU/RReLU state and NNX transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import relujax
import relujax.nn as rnn

X = jnp.linspace(-3.0, 3.0, 13, dtype=jnp.float32)

CASES = [
    pytest.param(spec, kwargs, id=f"{name}-{i}")
    for name, spec in relujax.ACTIVATIONS.items()
    for i, kwargs in enumerate(spec.cases())
]
PIECEWISE = [spec for spec in relujax.ACTIVATIONS.values() if spec.piecewise_linear]


def module_for(spec, kwargs, **extra):
    """The registered module built with the function's keyword arguments, in eval mode."""
    kwargs = {spec.module_args.get(k, k): v for k, v in kwargs.items()}
    module = rnn.make_activation(spec.name, rngs=nnx.Rngs(0), **kwargs, **extra)
    module.eval()  # RReLU: the deterministic mean slope, as the function without a key
    return module


def grid(spec):
    """X plus every kink of `spec`, in float32."""
    return jnp.concatenate([X, jnp.asarray(spec.kinks, jnp.float32)])


def test_public_api():
    assert sorted(rnn.__all__) == sorted(n for n in dir(rnn) if not n.startswith("_"))
    assert list(rnn.ACTIVATION_MODULES) == list(relujax.ACTIVATIONS)
    # Every module class that relujax.nn exports is the registered module of one activation.
    exported = {
        getattr(rnn, n)
        for n in rnn.__all__
        if isinstance(getattr(rnn, n), type) and issubclass(getattr(rnn, n), nnx.Module)
    }
    assert exported == set(rnn.ACTIVATION_MODULES.values())
    for name, spec in relujax.ACTIVATIONS.items():
        assert rnn.ACTIVATION_MODULES[name].__name__ == spec.module


@pytest.mark.parametrize("spec,kwargs", CASES)
def test_module_equals_function(spec, kwargs):
    x = grid(spec)
    module = module_for(spec, kwargs)
    np.testing.assert_array_equal(module(x), spec.fn(x, **kwargs))
    # Under jit XLA may fuse differently (gelu's tanh form): equal to float32 round-off.
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(module, x), module(x), rtol=1e-6)
    assert module(x).dtype == jnp.float32
    assert module(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("spec,kwargs", CASES)
def test_module_derivative_equals_function(spec, kwargs):
    x = grid(spec)
    module = module_for(spec, kwargs)
    np.testing.assert_array_equal(
        jax.grad(lambda x: module(x).sum())(x),
        jax.grad(lambda x: spec.fn(x, **kwargs).sum())(x),
    )


@pytest.mark.parametrize("subgradient", [0.5, 1.0])
@pytest.mark.parametrize("spec", PIECEWISE, ids=lambda s: s.name)
def test_module_subgradient_is_forwarded(spec, subgradient):
    kinks = jnp.asarray(spec.kinks, jnp.float32)

    def grad_at_kinks(f):
        return jax.grad(lambda x: f(x).sum())(kinks)

    module = module_for(spec, spec.default_kwargs, subgradient=subgradient)
    expected = grad_at_kinks(lambda x: spec.fn(x, **spec.default_kwargs, subgradient=subgradient))
    np.testing.assert_array_equal(grad_at_kinks(module), expected)
    # ...and it is not the default: the kink's derivative moved (relu'(0) = s).
    assert not np.array_equal(expected, grad_at_kinks(module_for(spec, spec.default_kwargs)))


def test_make_activation_errors():
    with pytest.raises(ValueError, match=r"make_activation: unknown activation name 'swish'.*relu"):
        rnn.make_activation("swish")
    assert isinstance(rnn.make_activation("LEAKY_RELU", negative_slope=0.3), rnn.LeakyReLU)


def test_prelu_parameter():
    p = rnn.PReLU()
    assert isinstance(p.weight, nnx.Param)
    assert p.weight.shape == (1,) and float(p.weight[0]) == 0.25
    np.testing.assert_allclose(p(jnp.array([-4.0, 2.0])), [-1.0, 2.0])
    pc = rnn.PReLU(3, init=0.1)
    x = -jnp.ones((2, 5, 3), jnp.float32)
    pc.weight[...] = jnp.array([0.1, 0.2, 0.3], jnp.float32)
    np.testing.assert_allclose(pc(x)[0, 0], [-0.1, -0.2, -0.3], rtol=1e-6)
    # dtype: the f32 slope never promotes a bf16 input; the parameter stays f32.
    assert pc(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert pc.weight.dtype == jnp.float32
    grads = nnx.grad(lambda m: m(x).sum())(pc)
    np.testing.assert_allclose(grads["weight"][...], [-10.0, -10.0, -10.0])


def test_prelu_errors():
    with pytest.raises(ValueError, match="PReLU: num_parameters must be a positive int"):
        rnn.PReLU(0)
    with pytest.raises(ValueError, match=r"PReLU: num_parameters=3 .* shape \(2, 4\)"):
        rnn.PReLU(3)(jnp.ones((2, 4)))


def test_rrelu_train_and_eval():
    act = rnn.RReLU(0.1, 0.3, rngs=nnx.Rngs(0))
    x = -jnp.ones((1000,), jnp.float32)
    y1, y2 = act(x), act(x)  # training mode: fresh slopes per element and per call
    assert float(y1.min()) >= -0.3 and float(y1.max()) <= -0.1
    assert float(jnp.std(y1)) > 0.03
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(act(-x), -x)  # positive side untouched
    act.eval()
    np.testing.assert_allclose(act(x), -0.2 * np.ones(1000), rtol=1e-6)
    act.train()
    assert not np.allclose(act(x), -0.2)


def test_rrelu_errors():
    with pytest.raises(ValueError, match="RReLU: training mode .* needs `rngs`"):
        rnn.RReLU()(X)
    rnn.RReLU(deterministic=True)(X)  # eval mode needs no rngs
    with pytest.raises(ValueError, match="RReLU: expected lower <= upper"):
        rnn.RReLU(0.5, 0.1)


def test_sequential_jit_grad():
    model = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
        rnn.PReLU(4),
        rnn.RReLU(rngs=nnx.Rngs(1)),
        nnx.Linear(4, 2, rngs=nnx.Rngs(2)),
    )
    x = jax.random.normal(jax.random.key(0), (8, 3), jnp.float32)

    @nnx.jit
    def step(model, x):
        return nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(model)

    _, grads = step(model, x)
    assert grads["layers"][1]["weight"][...].shape == (4,)
    model.eval()
    np.testing.assert_array_equal(nnx.jit(lambda m, x: m(x))(model, x), model(x))


def test_scan():
    act = rnn.RReLU(rngs=nnx.Rngs(0))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def apply(m, x):
        return m, m(x)

    _, ys = apply(act, -jnp.ones((3, 50), jnp.float32))
    assert ys.shape == (3, 50)
    assert not np.array_equal(ys[0], ys[1])  # the rng stream advances through the carry
