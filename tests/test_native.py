"""relujax._src.native: the FFI convolution kernels equal lax's, and perf uses them on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from relujax._src import native, perf

DN = ("NHWC", "HWIO", "NHWC")

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.build_error()}"
)

# (batch, height, width, in channels, out channels, kernel, pads): NetResDeep's block, odd
# sizes, asymmetric and zero pads, 1x1 and 5x5 kernels, few input channels (a first layer),
# more output channels than one tile, and a pixel count that is no multiple of the tile.
CASES = [
    (4, 16, 16, 32, 32, 3, ((1, 1), (1, 1))),
    (2, 9, 7, 3, 16, 3, ((1, 1), (1, 1))),
    (3, 7, 5, 5, 8, 3, ((0, 2), (2, 0))),
    (2, 8, 8, 16, 48, 1, ((0, 0), (0, 0))),
    (1, 6, 6, 4, 8, 5, ((2, 2), (2, 2))),
    (2, 5, 13, 7, 24, 3, ((0, 0), (1, 1))),
]


def _data(case, seed=0):
    n, h, w, c, o, k, pads = case
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    kern = jnp.asarray(rng.standard_normal((k, k, c, o)), jnp.float32)
    return x, kern, pads


def _lax(x, kern, pads):
    return lax.conv_general_dilated(x, kern, (1, 1), pads, dimension_numbers=DN)


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@needs_native
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_kernels_match_lax(case):
    x, kern, pads = _data(case)
    if kern.shape[-1] % native.lanes():
        pytest.skip(f"{kern.shape[-1]} output channels: not a multiple of {native.lanes()}")
    assert native.supports(x.shape, kern.shape, pads, x.dtype)
    ref, vjp = jax.vjp(lambda k: _lax(x, k, pads), kern)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(ref.shape), jnp.float32)
    got = jax.jit(native.conv, static_argnums=2)(x, kern, pads)
    kh, kw = kern.shape[:2]
    dk = jax.jit(native.conv_kernel_grad, static_argnums=(2, 3))(x, g, (kh, kw), pads)
    assert got.shape == ref.shape and dk.shape == kern.shape
    assert _rel(got, ref) < 1e-5
    assert _rel(dk, vjp(g)[0]) < 1e-5


@needs_native
def test_kernels_are_deterministic():
    x, kern, pads = _data(CASES[0])
    g = jnp.asarray(np.random.default_rng(2).standard_normal(x.shape), jnp.float32)
    step = jax.jit(lambda x, g: native.conv_kernel_grad(x, g, (3, 3), pads))
    first = np.asarray(step(x, g))
    for _ in range(5):
        np.testing.assert_array_equal(np.asarray(step(x, g)), first)


def test_supports_rejects_what_the_kernels_cannot_do():
    pads = ((1, 1), (1, 1))
    lanes = native.lanes()
    assert not native.supports((2, 8, 8, 3), (3, 3, 3, lanes + 1), pads, jnp.float32)
    assert not native.supports((2, 8, 8, 3), (3, 3, 3, lanes), pads, jnp.float64)
    assert not native.supports((2, 8, 8, 3), (3, 3, 3, lanes), ((3, 1), (1, 1)), jnp.float32)
    assert not native.supports((8, 8, 3), (3, 3, 3, lanes), pads, jnp.float32)


@needs_native
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5]], ids=["block", "asym", "valid"])
def test_perf_conv_uses_native_and_matches_lax(case):
    x, kern, pads = _data(case)

    def mine(x, k):
        return perf.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=DN)

    hlo = jax.jit(jax.grad(lambda x, k: jnp.sum(mine(x, k) ** 2), (0, 1))).lower(x, kern)
    assert "relujax_conv" in hlo.as_text()
    (y0, vjp0), (y1, vjp1) = jax.vjp(lambda x, k: _lax(x, k, pads), x, kern), jax.vjp(mine, x, kern)
    g = jnp.asarray(np.random.default_rng(3).standard_normal(y0.shape), jnp.float32)
    assert _rel(y1, y0) < 1e-5
    for a, b in zip(vjp1(g), vjp0(g), strict=True):
        assert _rel(a, b) < 1e-5


@needs_native
def test_native_false_keeps_xla():
    x, kern, pads = _data(CASES[0])

    def f(x, k):
        return perf.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=DN, native=False)

    assert (
        "relujax_conv" not in jax.jit(jax.grad(lambda x, k: f(x, k).sum())).lower(x, kern).as_text()
    )


def test_native_argument_is_checked(monkeypatch):
    x, kern, pads = _data(CASES[2])
    with pytest.raises(ValueError, match="native must be"):
        perf.conv_general_dilated(x, kern, (1, 1), pads, dimension_numbers=DN, native="yes")
    monkeypatch.setattr(perf._native, "available", lambda: False)
    with pytest.raises(ValueError, match="native=True but the native kernels are unavailable"):
        perf.conv_general_dilated(x, kern, (1, 1), pads, dimension_numbers=DN, native=True)
    # and the default then quietly keeps XLA's convolution
    y = perf.conv_general_dilated(x, kern, (1, 1), pads, dimension_numbers=DN)
    assert _rel(y, _lax(x, kern, pads)) < 1e-6


def _probe(env: dict[str, str]) -> str:
    code = (
        "from relujax._src import native; "
        "print(native.available(), native.build_error(), native.lanes())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return out.stdout.strip()


def test_disabled_by_environment():
    assert _probe({"RELUJAX_NATIVE": "0"}).startswith("False disabled by RELUJAX_NATIVE=0")


@needs_native
def test_builds_into_a_fresh_cache(tmp_path):
    assert _probe({"RELUJAX_CACHE": str(tmp_path)}).startswith("True None")
    built = list((tmp_path / "native").glob("relujax_conv_*.so"))
    assert len(built) == 1 and not list((tmp_path / "native").glob("tmp*"))


def test_missing_compiler_falls_back(tmp_path):
    # No compiler and an empty cache: XLA's convolutions, with the reason.
    env = {"RELUJAX_CACHE": str(tmp_path), "CXX": "", "PATH": str(tmp_path)}
    assert _probe(env).startswith("False no C++ compiler found")


@needs_native
def test_not_used_with_several_devices():
    # A sharded step would make XLA gather the custom call's operands: XLA's convs instead.
    code = (
        "import jax, jax.numpy as jnp; from relujax._src import perf; "
        "f = lambda x, w: perf.conv_general_dilated(x, w, (1, 1), 'SAME', "
        "dimension_numbers=('NHWC', 'HWIO', 'NHWC')); "
        "hlo = jax.jit(f).lower(jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 3, 16))).as_text(); "
        "print(jax.device_count(), perf.native_enabled(), 'relujax_conv' in hlo)"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.stdout.split() == ["2", "False", "False"], out.stderr[-2000:]
