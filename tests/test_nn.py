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

# module name -> the functional call it must equal.
FUNCTIONAL = {
    "relu": lambda x: relujax.relu(x),
    "relu6": lambda x: relujax.relu6(x),
    "leaky_relu": lambda x: relujax.leaky_relu(x, 0.01),
    "prelu": lambda x: relujax.prelu(x, 0.25),
    "rrelu": lambda x: relujax.rrelu(x, None),
    "elu": lambda x: relujax.elu(x),
    "celu": lambda x: relujax.celu(x),
    "selu": lambda x: relujax.selu(x),
    "gelu": lambda x: relujax.gelu(x),
    "silu": lambda x: relujax.silu(x),
    "softplus": lambda x: relujax.softplus(x),
}


def test_public_api():
    assert sorted(rnn.__all__) == sorted(n for n in dir(rnn) if not n.startswith("_"))
    assert set(rnn.ACTIVATION_MODULES) == set(FUNCTIONAL)


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_module_equals_function(name):
    module = rnn.make_activation(name, rngs=nnx.Rngs(0))
    module.eval()  # RReLU: the deterministic mean slope
    np.testing.assert_array_equal(module(X), FUNCTIONAL[name](X))
    assert module(X).dtype == jnp.float32
    assert module(X.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_hyperparameters_are_forwarded():
    np.testing.assert_array_equal(rnn.LeakyReLU(0.2)(X), relujax.leaky_relu(X, 0.2))
    np.testing.assert_array_equal(rnn.ELU(0.5)(X), relujax.elu(X, 0.5))
    np.testing.assert_array_equal(rnn.GELU(approximate=True)(X), relujax.gelu(X, approximate=True))
    np.testing.assert_array_equal(rnn.Softplus(2.0, 5.0)(X), relujax.softplus(X, 2.0, 5.0))
    g = jax.grad(lambda x: rnn.ReLU(subgradient=1.0)(x))(jnp.float32(0.0))
    assert g == 1.0


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
