"""relujax._src.native: the FFI kernels equal lax's at every vector width this CPU executes.

Expectations come from the build's lane count (4 with SSE, 8 with AVX2, 16 with AVX-512), never
from the machine the tests were written on: an AVX2 and an AVX-512 machine both pass, each
testing every width it can run.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from relujax._src import native, perf, policy

DN = ("NHWC", "HWIO", "NHWC")

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.build_error()}"
)


def _need(isa: str) -> None:
    """Skips unless this CPU executes ``isa`` code and its library builds."""
    if isa not in native.isas():
        pytest.skip(f"this CPU does not execute {isa} code (it runs {native.isas() or 'none'})")
    if not native.available(isa):
        pytest.skip(f"native {isa} kernels unavailable: {native.build_error(isa)}")


# (batch, height, width, in channels, out channels, kernel, pads): NetResDeep's block, odd
# sizes, asymmetric and zero pads, 1x1 and 5x5 kernels, few input channels (a first layer),
# more output channels than one tile, and a pixel count that is no multiple of the tile.
CASES = [
    (4, 16, 16, 32, 32, 3, ((1, 1), (1, 1))),
    (2, 9, 7, 3, 16, 3, ((1, 1), (1, 1))),
    (3, 7, 5, 5, 8, 3, ((0, 2), (2, 0))),
    (2, 8, 8, 16, 48, 1, ((0, 0), (0, 0))),
    (1, 6, 6, 4, 12, 5, ((2, 2), (2, 2))),
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


@pytest.mark.parametrize("isa", native.ISAS)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_kernels_match_lax(isa, case):
    _need(isa)
    x, kern, pads = _data(case)
    lanes = native.lanes(isa)
    assert lanes == {"sse": 4, "avx2": 8, "avx512": 16}[isa]
    fits = kern.shape[-1] % lanes == 0
    assert native.supports(x.shape, kern.shape, pads, x.dtype, isa=isa) == fits
    if not fits:
        return
    ref, vjp = jax.vjp(lambda k: _lax(x, k, pads), kern)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(ref.shape), jnp.float32)
    got = jax.jit(lambda x, k: native.conv(x, k, pads, isa=isa))(x, kern)
    kh, kw = kern.shape[:2]
    dk = jax.jit(lambda x, g: native.conv_kernel_grad(x, g, (kh, kw), pads, isa=isa))(x, g)
    assert got.shape == ref.shape and dk.shape == kern.shape
    assert _rel(got, ref) < 1e-5
    assert _rel(dk, vjp(g)[0]) < 1e-5


# Winograd F(2x2, 3x3) shapes, channels in vectors of the build (m: input channels, o: output):
# NetResDeep's block, odd heights and widths (a partial last tile row and column), asymmetric
# and zero pads, a 1x1 and a 2x3 image, more output than input channels, and an image wide
# enough to be cut into several bands of tile rows.
WINOGRAD = [
    (2, 16, 16, 2, 2, ((1, 1), (1, 1))),
    (3, 9, 7, 1, 2, ((1, 1), (1, 1))),
    (2, 7, 5, 2, 1, ((0, 2), (2, 0))),
    (2, 8, 11, 1, 1, ((0, 0), (0, 0))),
    (1, 1, 1, 1, 1, ((1, 1), (1, 1))),
    (2, 2, 3, 1, 3, ((2, 1), (0, 2))),
    (1, 20, 70, 2, 2, ((1, 1), (1, 1))),
]


@pytest.mark.parametrize("isa", native.ISAS)
@pytest.mark.parametrize("case", WINOGRAD, ids=[f"case{i}" for i in range(len(WINOGRAD))])
def test_winograd_matches_direct_and_lax(isa, case):
    _need(isa)
    n, h, w, m, mo, pads = case
    lanes = native.lanes(isa)
    c, o = m * lanes, mo * lanes
    x, kern, _ = _data((n, h, w, c, o, 3, pads))
    assert native.winograd_applies(kern.shape, isa=isa)
    assert not native.winograd_applies((3, 3, c + 1, o), isa=isa)
    assert not native.winograd_applies((5, 5, c, o), isa=isa)
    ref, vjp = jax.vjp(lambda k: _lax(x, k, pads), kern)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(ref.shape), jnp.float32)
    dk_ref = vjp(g)[0]
    for what, want, fn in [
        ("forward", ref, lambda x, g, w: native.conv(x, kern, pads, isa=isa, winograd=w)),
        (
            "kernel grad",
            dk_ref,
            lambda x, g, w: native.conv_kernel_grad(x, g, (3, 3), pads, isa=isa, winograd=w),
        ),
    ]:
        wino = jax.jit(functools.partial(fn, w=True))(x, g)
        direct = jax.jit(functools.partial(fn, w=False))(x, g)
        assert wino.shape == direct.shape == want.shape, what
        assert _rel(direct, want) < 1e-5, what
        assert _rel(wino, want) < 1e-5, what
        if h * w >= 16:  # the two paths round differently: both really ran
            assert _rel(wino, direct) > 0, what


def test_winograd_default_and_switch(monkeypatch):
    monkeypatch.delenv("RELUJAX_NATIVE_WINOGRAD", raising=False)
    assert native.winograd_default()
    monkeypatch.setenv("RELUJAX_NATIVE_WINOGRAD", "0")
    assert not native.winograd_default()
    with pytest.raises(TypeError, match="winograd must be a bool or None, got str"):
        native.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 4)), ((1, 1), (1, 1)), winograd="1")


@pytest.mark.parametrize("isa", native.ISAS)
def test_kernels_are_deterministic(isa):
    _need(isa)
    x, kern, pads = _data(CASES[0])
    g = jnp.asarray(np.random.default_rng(2).standard_normal(x.shape), jnp.float32)
    step = jax.jit(lambda x, g: native.conv_kernel_grad(x, g, (3, 3), pads, isa=isa))
    first = np.asarray(step(x, g))
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(step(x, g)), first)


def test_isas_are_what_the_cpu_runs():
    runnable = native.isas()
    assert set(runnable) <= set(native.ISAS)
    if runnable:
        assert runnable[0] == "sse" and native.default_isa() in native.ISAS
    with pytest.raises(ValueError, match="isa must be one of"):
        native.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 4)), ((1, 1), (1, 1)), isa="neon")


def test_bad_isa_in_environment(monkeypatch):
    monkeypatch.setenv("RELUJAX_NATIVE_ISA", "avx1024")
    assert not native.available()
    assert "RELUJAX_NATIVE_ISA" in native.build_error() and "avx1024" in native.build_error()


def test_not_x86(monkeypatch):
    monkeypatch.delenv("RELUJAX_NATIVE", raising=False)
    monkeypatch.setattr(native.platform, "machine", lambda: "aarch64")
    assert native.isas() == ()
    assert "not an x86-64 CPU" in native._why_not("sse")


def test_supports_rejects_what_the_kernels_cannot_do():
    pads = ((1, 1), (1, 1))
    lanes = native.lanes()
    assert not native.supports((2, 8, 8, 3), (3, 3, 3, lanes + 1), pads, jnp.float32)
    assert not native.supports((2, 8, 8, 3), (3, 3, 3, lanes), pads, jnp.float16)
    assert not native.supports((2, 8, 8, 3), (3, 3, 3, lanes), ((3, 1), (1, 1)), jnp.float32)
    assert not native.supports((8, 8, 3), (3, 3, 3, lanes), pads, jnp.float32)


@needs_native
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5]], ids=["block", "asym", "valid"])
def test_perf_conv_uses_native_and_matches_lax(case):
    x, kern, pads = _data(case)
    lanes = native.lanes()
    c, o = kern.shape[2:]

    def mine(x, k):
        return perf.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=DN)

    hlo = jax.jit(jax.grad(lambda x, k: jnp.sum(mine(x, k) ** 2), (0, 1))).lower(x, kern)
    hlo = hlo.as_text()
    # forward and kernel gradient need o, the input gradient c output channels per lane
    assert (f"relujax_conv_{native.default_isa()}" in hlo) == (o % lanes == 0)
    assert ("relujax_conv_kernel_grad" in hlo) == (o % lanes == 0)
    assert (hlo.count("relujax_conv_") == 3) == (o % lanes == 0 and c % lanes == 0)
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

    hlo = jax.jit(jax.grad(lambda x, k: f(x, k).sum())).lower(x, kern).as_text()
    assert "relujax_conv" not in hlo


def test_native_argument_is_checked(monkeypatch):
    x, kern, pads = _data(CASES[2])
    with pytest.raises(ValueError, match="native must be"):
        perf.conv_general_dilated(x, kern, (1, 1), pads, dimension_numbers=DN, native="yes")
    monkeypatch.setattr(perf._native, "available", lambda isa=None: False)
    with pytest.raises(ValueError, match="native=True but the native kernels are unavailable"):
        perf.conv_general_dilated(x, kern, (1, 1), pads, dimension_numbers=DN, native=True)


def test_policy_without_native_keeps_xla(monkeypatch):
    # What RELUJAX_NATIVE=0, no compiler or another CPU give: XLA's convolutions, same values.
    monkeypatch.setattr(native, "available", lambda isa=None: False)
    x, kern, pads = _data(CASES[0])

    def f(x, k):
        return perf.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=DN)

    assert not policy.native_convs()
    hlo = jax.jit(jax.grad(lambda x, k: f(x, k).sum(), (0, 1))).lower(x, kern).as_text()
    assert "relujax_conv" not in hlo
    assert _rel(jax.jit(f)(x, kern), _lax(x, kern, pads)) < 1e-5


def _probe(env: dict[str, str], *, stderr: bool = False) -> str:
    code = (
        "from relujax._src import native; native.available(); "
        "print(native.available(), native.build_error(), native.lanes(), native.default_isa())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return out.stderr if stderr else out.stdout.strip()


def test_disabled_by_environment():
    env = {"RELUJAX_NATIVE": "0"}
    assert _probe(env).startswith("False disabled by RELUJAX_NATIVE=0")
    assert "unavailable" not in _probe(env, stderr=True)  # the user's choice: no notice


@needs_native
def test_isa_chosen_by_environment():
    # The narrowest width every x86-64 CPU runs (its build is cached by test_kernels_match_lax).
    assert _probe({"RELUJAX_NATIVE_ISA": "sse"}) == "True None 4 sse"


@needs_native
def test_builds_into_a_fresh_cache(tmp_path):
    assert _probe({"RELUJAX_CACHE": str(tmp_path)}).startswith("True None")
    built = list((tmp_path / "native").glob("relujax_conv_*.so"))
    assert len(built) == 1 and not list((tmp_path / "native").glob("tmp*"))


@pytest.mark.skipif(not native.isas(), reason="not an x86-64 CPU: no build is attempted")
def test_missing_compiler_falls_back(tmp_path):
    # No compiler and an empty cache: XLA's convolutions, with the reason.
    env = {"RELUJAX_CACHE": str(tmp_path), "CXX": "", "PATH": str(tmp_path), "RELUJAX_NATIVE": "1"}
    assert _probe(env).startswith("False no C++ compiler found")
    # one notice, however often it is asked
    assert _probe(env, stderr=True).count("native CPU convolutions unavailable") == 1


@needs_native
def test_not_used_with_several_devices():
    # A sharded step would make XLA gather the custom call's operands: XLA's convs instead.
    code = (
        "import jax, jax.numpy as jnp; from relujax._src import perf, policy; "
        "f = lambda x, w: perf.conv_general_dilated(x, w, (1, 1), 'SAME', "
        "dimension_numbers=('NHWC', 'HWIO', 'NHWC')); "
        "hlo = jax.jit(f).lower(jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 3, 16))).as_text(); "
        "print(jax.device_count(), policy.native_convs(), 'relujax_conv' in hlo)"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.stdout.split() == ["2", "False", "False"], out.stderr[-2000:]
