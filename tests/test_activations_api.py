"""Public API of the activations: exports, registry, every error path, rrelu's randomness."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import relujax
from relujax._src import activations as impl

SPECS = list(relujax.ACTIVATIONS.values())
NAMES = [
    "relu",
    "relu6",
    "leaky_relu",
    "prelu",
    "rrelu",
    "elu",
    "celu",
    "selu",
    "gelu",
    "silu",
    "softplus",
]


def test_all_matches_exports():
    public = {
        n for n, v in vars(relujax).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    assert set(relujax.__all__) == public
    assert set(NAMES) <= set(relujax.__all__)
    assert isinstance(relujax.__version__, str)


def test_registry_describes_every_function():
    assert list(relujax.ACTIVATIONS) == NAMES
    for name, spec in relujax.ACTIVATIONS.items():
        assert spec.name == name and spec.fn is getattr(relujax, name)
        assert spec.fn.__doc__ and "Example:" in spec.fn.__doc__
        signature = inspect.signature(spec.fn)
        for key, value in spec.default_kwargs.items():
            default = signature.parameters[key].default
            assert default is inspect.Parameter.empty or default == value, (name, key)
        for param in spec.params:
            assert param in signature.parameters, (name, param)
        assert ("subgradient" in signature.parameters) == spec.piecewise_linear
        y, dy, d2y = spec.reference(np.linspace(-1.0, 1.0, 5), **spec.default_kwargs)
        assert y.shape == dy.shape == d2y.shape == (5,)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        relujax.ACTIVATIONS["relu"] = None  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        relujax.ACTIVATIONS["relu"].name = "other"  # type: ignore[misc]


def test_torch_names_exist():
    torch_functional = pytest.importorskip("torch.nn.functional")
    for spec in SPECS:
        assert spec.torch_name is None or hasattr(torch_functional, spec.torch_name)


def test_docstring_examples_run():
    """Every example in the docstrings prints what it says (float32 default, as users see)."""
    modules = ["piecewise", "exponential", "smooth", "memory"]
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    for module in [relujax] + [
        importlib.import_module(f"relujax._src.activations.{m}") for m in modules
    ]:
        for test in finder.find(module, module.__name__):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 15 and result.failed == 0


# --- errors: name the function, the argument, what was expected and what came ----------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize(
    "bad,shown",
    [
        (jnp.arange(3), "int"),
        (np.array([True, False]), "bool"),
        (jnp.ones(2, jnp.complex64), "complex64"),
        (3, "int"),
        ("1.0", "str"),
    ],
    ids=["int-array", "bool-array", "complex", "python-int", "string"],
)
def test_non_floating_input_is_a_type_error(spec, bad, shown):
    with pytest.raises(TypeError, match=rf"relujax\.{spec.name}: expected x .*floating.*{shown}"):
        spec.fn(bad, **spec.default_kwargs)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.piecewise_linear], ids=lambda s: s.name)
def test_subgradient_errors(spec):
    x, kw = jnp.ones(3), spec.default_kwargs
    with pytest.raises(ValueError, match=rf"relujax\.{spec.name}: .*subgradient in \[0, 1\].*1\.5"):
        spec.fn(x, **kw, subgradient=1.5)
    with pytest.raises(ValueError, match=r"subgradient in \[0, 1\].*-0\.1"):
        spec.fn(x, **kw, subgradient=-0.1)
    with pytest.raises(TypeError, match=rf"relujax\.{spec.name}: expected subgradient.*str"):
        spec.fn(x, **kw, subgradient="half")
    with pytest.raises(ValueError, match=r"expected subgradient to be a scalar.*\(2,\)"):
        spec.fn(x, **kw, subgradient=jnp.array([0.0, 1.0]))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.params], ids=lambda s: s.name)
def test_hyperparameter_errors(spec):
    name = spec.params[0]
    x, kw = jnp.ones((2, 3)), dict(spec.default_kwargs)
    with pytest.raises(TypeError, match=rf"relujax\.{spec.name}: expected {name} .*str"):
        spec.fn(x, **{**kw, name: "0.5"})
    with pytest.raises(TypeError, match=rf"relujax\.{spec.name}: expected {name} .*complex64"):
        spec.fn(x, **{**kw, name: jnp.ones((), jnp.complex64)})
    with pytest.raises(ValueError, match=rf"relujax\.{spec.name}: expected {name} .*\(4,\)"):
        spec.fn(x, **{**kw, name: jnp.ones(4)})
    with pytest.raises(ValueError, match=rf"relujax\.{spec.name}: expected {name} .*nan"):
        spec.fn(x, **{**kw, name: float("nan")})


def test_value_range_errors():
    x = jnp.ones(3)
    with pytest.raises(ValueError, match=r"relujax\.celu: expected alpha to be a nonzero.*0\.0"):
        relujax.celu(x, 0.0)
    with pytest.raises(ValueError, match=r"relujax\.softplus: expected beta .*positive.*-1\.0"):
        relujax.softplus(x, -1.0)
    with pytest.raises(ValueError, match=r"relujax\.rrelu: expected lower <= upper.*0\.5.*0\.25"):
        relujax.rrelu(x, lower=0.5, upper=0.25)
    with pytest.raises(
        ValueError, match=r"relujax\.prelu: expected alpha .*\(C,\) = \(3,\).*\(4,\)"
    ):
        relujax.prelu(jnp.ones((2, 3)), jnp.ones(4))
    with pytest.raises(TypeError, match=r"relujax\.gelu: expected approximate .*bool.*str"):
        relujax.gelu(x, approximate="tanh")  # type: ignore[arg-type]


def test_rrelu_key_errors():
    with pytest.raises(TypeError, match=r"relujax\.rrelu: expected key to be a PRNG key.*int"):
        relujax.rrelu(jnp.ones(3), 0)  # type: ignore[arg-type]
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"relujax\.rrelu: expected key .*single.*\(2,\)"):
        relujax.rrelu(jnp.ones(3), keys)


def test_traced_hyperparameters_are_not_checked_but_work():
    f = jax.jit(lambda x, a, s: relujax.leaky_relu(x, a, subgradient=s))
    np.testing.assert_allclose(f(jnp.array([-2.0, 1.0]), 0.5, 0.0), [-1.0, 1.0])


# --- rrelu: random slopes ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
def test_rrelu_slopes_uniform_and_reproducible(dtype):
    lower, upper, n = 0.1, 0.4, 20000
    x = -jnp.ones(n, dtype)
    key = jax.random.key(42)
    y = jax.jit(relujax.rrelu, static_argnames=())(x, key, lower, upper)
    assert y.dtype == jnp.dtype(dtype)
    slopes = -np.asarray(y, np.float64)
    assert slopes.min() >= lower - 1e-3 and slopes.max() <= upper + 1e-3
    # Uniform: mean and each decile's count within 5 sigma.
    sigma_mean = (upper - lower) / np.sqrt(12 * n)
    assert abs(slopes.mean() - (lower + upper) / 2) < 5 * sigma_mean
    counts, _ = np.histogram(slopes, bins=10, range=(lower, upper))
    assert np.all(np.abs(counts - n / 10) < 5 * np.sqrt(n / 10 * 0.9) + 0.02 * n), counts
    np.testing.assert_array_equal(relujax.rrelu(x, key, lower, upper), y)  # same key, same slopes
    assert not np.array_equal(relujax.rrelu(x, jax.random.key(43), lower, upper), y)
    # The gradient uses the very same slopes (regenerated from the key, not stored).
    grad = jax.grad(lambda x: jnp.sum(relujax.rrelu(x, key, lower, upper).astype(jnp.float32)))(x)
    np.testing.assert_array_equal(np.asarray(grad, np.float64), slopes)
    positive = relujax.rrelu(jnp.ones(4, dtype), key, lower, upper)
    np.testing.assert_array_equal(positive, jnp.ones(4, dtype))


def test_rrelu_without_key_is_the_mean_slope_and_legacy_keys_work():
    x = jnp.array([-2.0, 3.0])
    np.testing.assert_allclose(relujax.rrelu(x), [-2.0 * (1 / 8 + 1 / 3) / 2, 3.0], rtol=1e-6)
    legacy = jax.random.PRNGKey(0)
    new = jax.random.wrap_key_data(legacy)
    np.testing.assert_array_equal(
        relujax.rrelu(-jnp.ones(8), legacy), relujax.rrelu(-jnp.ones(8), new)
    )
    # vmap over keys: one independent draw per key.
    ys = jax.vmap(lambda k: relujax.rrelu(-jnp.ones(8), k))(jax.random.split(jax.random.key(1), 3))
    assert ys.shape == (3, 8) and not np.array_equal(ys[0], ys[1])


def test_impl_exports_match_public():
    for name in NAMES:
        assert getattr(impl, name) is getattr(relujax, name)
    assert isinstance(relujax.ACTIVATIONS, types.MappingProxyType)


def test_plot_command_writes_a_small_png(tmp_path):
    from relujax import plot

    out = tmp_path / "sub" / "activations.png"
    plot.main(["--out", str(out)])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 300_000


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_strict_promotion_settings_are_respected(spec):
    """Users running with strict dtype and rank promotion (as equinox's tests do) can use all."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 4), jnp.float32)
    kw = dict(spec.default_kwargs)
    if spec.name == "prelu":
        kw["alpha"] = jnp.full((4,), 0.25, jnp.float32)  # per channel
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        params = {k: jnp.asarray(kw[k], jnp.float32) for k in spec.params if k in kw}
        others = {k: v for k, v in kw.items() if k not in params}
        loss = lambda x, p: jnp.sum(spec.fn(x, **others, **p))  # noqa: E731
        gx, gp = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, params)
    assert gx.shape == x.shape and all(gp[k].shape == params[k].shape for k in params)
