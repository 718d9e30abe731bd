"""Smoke tests of ``benchmarks.train_step``: tiny sizes, so no figure here means anything.

They check what a reader of its table relies on: a row for every step asked for, ratios that
follow from the rows, the JSON's fields, and each variant (isolated processes, profile, depths)
running end to end.
"""

from __future__ import annotations

import json
import pathlib

import pytest

pytest.importorskip("flax")
pytest.importorskip("benchmarks._harness")

from benchmarks import _harness as h  # noqa: E402
from benchmarks import _step_modes as modes  # noqa: E402
from benchmarks import train_step as ts  # noqa: E402

IMPLS = ["app", "plain", "plain[cached]", "plain[jax.jit]"]
IMPLS += ["torch"] if h.torch_available() else []
BASE = ["--quick", "--models", "netdepth", "--batch-sizes", "2", "--repeats", "1"]


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_step") / "ts.json"
    ts.main([*BASE, "--impls", ",".join(IMPLS), "--out", str(out)])
    return json.loads(out.read_text())


def test_a_row_for_each_requested_step(doc):
    assert [r["impl"] for r in doc["rows"]] == IMPLS
    for r in doc["rows"]:
        assert (r["model"], r["batch"], r["dtype"]) == ("netdepth", 2, "float32")
        assert r["step_ms"] > 0 and len(r["samples"]) == 1
        assert r["images_per_s"] == pytest.approx(2e3 / r["step_ms"])
        assert r["peak_MiB"] > 0
    for r in doc["rows"]:
        if r["impl"] != "torch":  # JAX steps: compiled ahead of time, XLA's memory analysis
            assert r["compile_s"] > 0 and r["xla_memory"]["temp"] >= 0


def test_ratios_follow_from_the_rows(doc):
    rows = {r["impl"]: r for r in doc["rows"]}
    if "torch" not in rows:
        assert all(r["vs_torch"] is None for r in rows.values())
        return
    torch = rows["torch"]
    for r in rows.values():
        assert r["vs_torch"] == pytest.approx(torch["step_ms"] / r["step_ms"])
        assert r["peak_vs_torch"] == pytest.approx(r["peak_MiB"] / torch["peak_MiB"])
    assert torch["vs_torch"] == 1.0


def test_json_says_what_ran_where(doc):
    assert doc["benchmark"] == "train_step" and doc["quick"] is True
    assert doc["mode"] == "side_by_side" and doc["dtype"] == "float32"
    assert doc["impls"] == IMPLS and "--impls" in doc["argv"]
    assert "native" in doc["policy"]
    assert doc["machine"]["allocator"] and doc["machine"]["jax"]


def test_add_ratios_groups_by_model_batch_and_dtype():
    def row(model, impl, step_ms, peak_mib, dtype="float32"):
        return {
            "model": model,
            "batch": 8,
            "dtype": dtype,
            "impl": impl,
            "step_ms": step_ms,
            "peak_MiB": peak_mib,
        }

    rows = [
        row("a", "torch", 10.0, 4.0),
        row("a", "app", 5.0, 2.0),
        row("a", "app", 20.0, 8.0, dtype="bfloat16"),  # no torch row of its dtype
        row("b", "app", 1.0, None),
    ]
    out = ts.add_ratios(rows)
    assert [r["vs_torch"] for r in out] == [1.0, 2.0, None, None]
    assert [r["peak_vs_torch"] for r in out] == [1.0, 0.5, None, None]


@pytest.mark.parametrize(
    ("flag", "value", "match"),
    [("--models", "nosuchnet", "--models: unknown model"), ("--impls", "jit", "--impls: unknown")],
)
def test_bad_arguments_name_the_flag(flag, value, match, capsys):
    with pytest.raises(SystemExit):
        ts.parse([flag, value])
    assert match in capsys.readouterr().err


def test_isolated_processes(tmp_path):
    out = tmp_path / "iso.json"
    args = [*BASE, "--isolated", "--impls", "app", "--rounds", "1", "--steps", "2"]
    doc = ts.main([*args, "--out", str(out)])
    (row,) = doc["rows"]
    assert row["impl"] == "app" and len(row["samples"]) == 2 and row["compile_s"] > 0
    assert json.loads(out.read_text())["mode"] == "isolated"
    if pathlib.Path("/proc/self/clear_refs").exists():  # Linux: the process's resident memory
        assert 0 < row["rss_step_MiB"] < row["rss_MiB"]
        assert row["rss_vs_torch"] is None  # no torch row to compare with


def test_profile_sums_op_kinds(tmp_path):
    out = tmp_path / "prof.json"
    doc = ts.main([*BASE, "--profile", "--impls", "app", "--steps", "1", "--out", str(out)])
    assert doc["rows"] and {r["impl"] for r in doc["rows"]} == {"app"}
    shares = [r["share_of_step"] for r in doc["rows"]]
    assert shares == sorted(shares, reverse=True) and all(s >= 0 for s in shares)


def test_depths_time_each_construction(tmp_path):
    out = tmp_path / "depths.json"
    doc = ts.main(["--depths", "1", "--batch-sizes", "2", "--repeats", "1", "--out", str(out)])
    assert [r["impl"] for r in doc["rows"]] == list(modes.DEPTH_IMPLS)
    assert all(r["depth"] == 1 and r["compile_s"] > 0 for r in doc["rows"])


def test_report_prints_the_table_and_plots_speed_vs_torch(doc, tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks import report

    (tmp_path / "train_step_test.json").write_text(json.dumps(doc))
    (text,) = report.main(["--results", str(tmp_path), "--plots", str(tmp_path)])
    assert "python -m benchmarks.train_step --quick" in text and "allocator" in text
    lines = [line for line in text.splitlines() if line.startswith("| netdepth")]
    assert [line.split("|")[3].strip() for line in lines] == IMPLS
    assert (tmp_path / "train_step_test.png").stat().st_size > 1000
