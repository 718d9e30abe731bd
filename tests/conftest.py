"""Shared pytest configuration for relujax: the tests run in the user's dtype regime.

x64 is off, as for every JAX user, and NumPy-style dtype promotion is strict, so an implicit
promotion inside the library (an f32 array meeting a bf16 one, an int32 meeting an int8) fails
loudly instead of silently changing a dtype. The environment variable reaches the `python -m
train` subprocesses that some tests start too. Two markers open exceptions:

- `@pytest.mark.x64`: the test (or one parametrized case, `pytest.param(jnp.float64,
  marks=pytest.mark.x64)`) runs with `jax.enable_x64(True)`, for a float64 computation or
  reference. The `x64` fixture does the same for a test that asks for it by argument.
- `@pytest.mark.mixed_dtypes`: the test mixes dtypes on purpose (standard promotion).

JAX's warning that an explicitly requested float64 was truncated to float32 is an error: a
float64 reference computed with x64 off would otherwise compare float32 against itself.
"""

import os

os.environ["JAX_NUMPY_DTYPE_PROMOTION"] = "strict"
os.environ.pop("JAX_ENABLE_X64", None)

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", False)
jax.config.update("jax_numpy_dtype_promotion", "strict")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("RELUJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "x64: runs with jax_enable_x64 (a float64 computation)")
    config.addinivalue_line(
        "markers", "mixed_dtypes: mixes dtypes on purpose (standard, not strict, promotion)"
    )
    config.addinivalue_line("filterwarnings", "error:Explicitly requested dtype:UserWarning")


@pytest.fixture(autouse=True)
def _dtype_regime(request: pytest.FixtureRequest):
    """x64 and standard promotion only where a marker asks for them."""
    x64 = request.node.get_closest_marker("x64") is not None
    promotion = "standard" if request.node.get_closest_marker("mixed_dtypes") else "strict"
    with jax.enable_x64(x64), jax.numpy_dtype_promotion(promotion):
        yield


@pytest.fixture
def x64():
    """float64 inside the test that asks for this fixture."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def shared_data() -> pathlib.Path:
    """The real CIFAR files of ../shared/data; skips when the folder is absent."""
    if not (SHARED_DATA / "cifar2.npz").exists():
        pytest.skip(f"real CIFAR data not found in {SHARED_DATA} (only present beside the repo)")
    return SHARED_DATA
