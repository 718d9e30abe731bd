"""Each benchmark's tiny mode runs end to end and writes consistent JSON.

The benchmarks themselves live in ``benchmarks/`` and are never collected by pytest; these check
that ``make bench`` cannot rot: the rows hold the columns the tables print, and every derived
column (throughput, ratio, share) is what its definition computes from the timed samples. Sizes
are tiny, so no figure here means anything.
"""

from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("benchmarks._harness")

from benchmarks import _harness as h  # noqa: E402

approx = pytest.approx


def ms_from_samples(row, key="step_ms"):
    """`row[key]` is the median of its samples (seconds, rounded to the microsecond)."""
    assert row[key] == approx(1e3 * statistics.median(row["samples"]), abs=1e-3), row


def test_time_alternating_orders_and_medians():
    calls = []
    out = h.time_alternating(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b"] * 4
    assert set(out) == {"a", "b"} and out["a"]["n"] == 3
    assert out["a"]["min"] <= out["a"]["median"]


def test_format_table_and_machine_info():
    table = h.format_table([{"x": 1.23456, "y": None}], ["x", "y"])
    assert table.splitlines()[2] == "| 1.23 | - |"
    info = h.machine_info()
    assert info["jax"] and info["cpu_count"] >= 1 and info["backend"]


def test_activations_quick(tmp_path):
    from benchmarks import activations

    out = tmp_path / "act.json"
    activations.main(["--quick", "--only", "relu,gelu", "--repeats", "1", "--out", str(out)])
    doc = json.loads(out.read_text())
    rows = {r["function"]: r for r in doc["rows"]}
    assert set(rows) == {"relu", "gelu"}
    assert rows["relu"]["residual_B_per_elt"] <= 1.0
    n_bytes = doc["n_elements"] * 4  # float32
    for row in rows.values():
        for pass_, arrays in (("fwd", 2), ("fb", 4)):  # x, y; and x, g, y, dx
            assert set(activations.table_columns(pass_)) <= set(row), row
            ms = row[f"{pass_}_ms_relujax"]
            assert row[f"{pass_}_GBps_relujax"] == approx(arrays * n_bytes / ms / 1e6)
            assert row[f"{pass_}_speedup_vs_jax.nn"] == approx(row[f"{pass_}_ms_jax.nn"] / ms)
            assert row[f"{pass_}_pct_of_limit"] == approx(100 * row[f"{pass_}_ms_limit"] / ms)
    hlo = {r["function"]: r for r in doc["hlo"]}
    assert hlo["relu"]["fusions_relujax"] == hlo["relu"]["fusions_jax.nn"]
    assert doc["machine"]["cpu"]


def test_train_step_quick(tmp_path):
    from benchmarks import train_step

    out = tmp_path / "ts.json"
    train_step.main(
        ["--models", "netresdeep2", "--batch-sizes", "4", "--repeats", "1", "--out", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    impls = {r["impl"] for r in rows}
    from relujax._src import perf

    expected = {"jit", "jit+conv(split)", "jit+conv+opts+scan"}
    if perf.compiler_options() is not None:  # XLA's convolutions under the training options
        expected.add("jit+conv+opts")
    if perf.native_enabled():  # what python -m train compiles on CPU
        expected |= {"jit+native+opts", "jit+native+opts+scan"}
    assert expected <= impls
    torch = next((r for r in rows if r["impl"] == "torch"), None)
    for r in rows:
        assert (r["model"], r["batch"], r["dtype"]) == ("netresdeep2", 4, "float32")
        ms_from_samples(r)
        assert r["images_per_s"] == approx(4 / (r["step_ms"] / 1e3))
        if torch is None:
            assert r["vs_torch"] is None
        else:
            assert r["vs_torch"] == approx(torch["step_ms"] / r["step_ms"])
        if r["impl"].startswith("jit"):
            assert r["compile_s"] > 0 and r["peak_MiB"] is not None, r


def test_compile_time_quick(tmp_path):
    from benchmarks import compile_time

    out = tmp_path / "ct.json"
    compile_time.main(["--depths", "2", "--batch-size", "2", "--repeats", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {r["variant"] for r in rows} == {
        "unrolled",
        "unrolled+conv+opts",
        "scan+conv+opts",
        "scan",
    }
    for r in rows:
        assert r["depth"] == 2 and r["compile_s"] > 0, r
        ms_from_samples(r)


def test_conv_pieces_quick(tmp_path):
    from benchmarks import conv_pieces

    out = tmp_path / "cp.json"
    conv_pieces.main(["--quick", "--repeats", "1", "--out", str(out)])
    rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"NHWC lax dw", "NHWC perf dw", "NHWC perf dw (kernel_grad=split)"} <= set(rows)
    from relujax._src import perf

    if perf.native_enabled():
        assert "NHWC native dw (train: native kernels)" in rows
    b, size, _, ch = json.loads(out.read_text())["shape"]
    for name, r in rows.items():
        ms_from_samples(r, "ms")
        if not name.startswith("max_pool"):  # a 3x3 convolution: 2 * 9 * C * C flops per pixel
            assert r["GFLOP_per_s"] == approx(2 * b * size * size * ch * ch * 9 / r["ms"] / 1e6)


def test_profile_step_quick(tmp_path):
    from benchmarks import profile_step

    out = tmp_path / "ps.json"
    doc = profile_step.main(["--quick", "--steps", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    kinds = {r["op"] for r in rows}
    assert any("fusion" in k for k in kinds)
    assert doc["traced_ms"] == approx(sum(r["ms_per_step"] for r in rows))
    assert [r["ms_per_step"] for r in rows] == sorted(
        (r["ms_per_step"] for r in rows), reverse=True
    )
    for r in rows:
        assert r["share_of_step"] == approx(r["ms_per_step"] / doc["step_ms"])
    from relujax._src import perf

    if perf.native_enabled():  # the native convolutions are traced as FFI calls
        assert "ffi_call" in kinds


def test_step_isolated_quick(tmp_path):
    from benchmarks import step_isolated

    out = tmp_path / "si.json"
    step_isolated.main(["--quick", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["impl"].startswith("relujax")
    assert len(rows[0]["samples"]) == 3  # --quick: one round of 3 timed steps per child
    for r in rows:
        ms_from_samples(r)
        assert r["images_per_s"] == approx(r["batch"] / (r["step_ms"] / 1e3))


def test_step_variants_quick(tmp_path):
    from benchmarks import step_variants

    out = tmp_path / "sv.json"
    step_variants.main(["--quick", "--repeats", "1", "--out", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"default", "train"} <= set(rows) and rows["train"]["vs_train"] == 1.0
    for r in rows.values():
        ms_from_samples(r)
        assert r["vs_train"] == approx(rows["train"]["step_ms"] / r["step_ms"])


def test_step_variants_bn_vjp_matches_autodiff():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import step_variants as sv

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 3, 3, 5)) + 2.0, jnp.float32)
    scale, bias = jnp.asarray(rng.uniform(0.5, 1.5, 5), jnp.float32), jnp.zeros(5)
    w = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def loss(f):
        def inner(x, scale, bias):
            y, mean, var = f(x, scale, bias, 1e-5)
            return jnp.sum(w * y) + jnp.sum(mean**2) + jnp.sum(var)

        return inner

    mine = jax.grad(loss(sv._bn), argnums=(0, 1, 2))(x, scale, bias)
    ref = jax.grad(loss(lambda *a: sv._bn_fwd(*a)[0]), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(mine, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
