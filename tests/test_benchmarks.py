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
    assert set(rows) == {"relu", "gelu", "gelu(approximate=True)"}  # each registered variant too
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


def test_conv_pieces_quick(tmp_path):
    from benchmarks import conv_pieces

    out = tmp_path / "cp.json"
    conv_pieces.main(["--quick", "--repeats", "1", "--out", str(out)])
    rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"NHWC lax dw", "NHWC perf dw", "NHWC perf dw (kernel_grad=split)"} <= set(rows)
    from relujax._src import policy

    if policy.native_convs():
        assert "NHWC native dw (train: native kernels)" in rows
    b, size, _, ch = json.loads(out.read_text())["shape"]
    for name, r in rows.items():
        ms_from_samples(r, "ms")
        if not name.startswith("max_pool"):  # a 3x3 convolution: 2 * 9 * C * C flops per pixel
            assert r["GFLOP_per_s"] == approx(2 * b * size * size * ch * ch * 9 / r["ms"] / 1e6)
