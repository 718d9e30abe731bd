"""The accelerator check (``python -m benchmarks.accel_check``) cannot rot between GPU loans.

Its ``--quick`` mode runs here on the CPU at tiny sizes (no figure means anything), and the
training steps it builds for a GPU are lowered for CUDA with ``jax.export`` (no GPU needed).
"""

from __future__ import annotations

import json

import jax
import pytest

pytest.importorskip("benchmarks.accel_check")

from benchmarks import accel_check  # noqa: E402
from benchmarks.accel import common  # noqa: E402


@pytest.fixture(autouse=True)
def _user_regime():
    """float32 as a user runs it (x64 off), whatever the suite's default."""
    with jax.enable_x64(False):
        yield


@pytest.mark.parametrize(
    "model,kwargs,dtype",
    [
        ("netdepth", {}, "float32"),
        ("netresdeep", {}, "float32"),
        ("netresdeep", {"shared_blocks": True}, "float32"),
        ("netresdeep", {}, "bfloat16"),
    ],
)
def test_gpu_steps_lower_for_cuda(model, kwargs, dtype):
    kwargs = {"n_blocks": 2, "n_chans1": 8, **kwargs} if model == "netresdeep" else kwargs
    r = common.export_step(model, kwargs, platform_name="cuda", batch=2, dtype=dtype)
    assert r["platforms"] == ["cuda"]
    assert r["mlir_chars"] > 1000
    assert r["cpu_only_custom_calls"] == []


def test_emulated_backend_is_restored():
    from relujax import policy

    real = policy.describe()
    with common.emulate_backend("gpu"):
        assert policy.default_backend() == "gpu" and policy.describe()["conv"] == "lax"
    assert policy.describe() == real


def test_cpu_step_with_native_kernels_is_caught():
    # The converse of test_gpu_steps_lower_for_cuda: where the policy runs relujax's native
    # CPU kernels, the CPU step holds their custom calls, and the check finds them.
    from relujax._src import policy

    if not policy.native_convs():
        pytest.skip("relujax's native CPU kernels are not in use in this process")
    try:
        r = common.export_step("netdepth", platform_name="cpu", batch=2)
    except ValueError as e:  # jax.export refuses custom calls without a stability guarantee
        assert "relujax_conv" in str(e)
    else:
        assert r["cpu_only_custom_calls"], "the native kernels' custom calls were not found"


def test_cpu_only_custom_calls_are_found():
    text = (
        "stablehlo.custom_call @relujax_conv(%0) {api_version = 4 : i32}\n"
        "stablehlo.custom_call @cu_threefry2x32(%1)\n"
        '"stablehlo.custom_call"(%2) {call_target_name = "relujax_conv_kernel_grad"}'
    )
    assert common.cpu_only_custom_calls(text) == ["relujax_conv", "relujax_conv_kernel_grad"]


def test_budget():
    b = common.Budget(100.0)
    assert b.ok() and b.ok(50.0) and not b.ok(1000.0)
    assert common.Budget(-1.0).ok() is False


def test_a_failing_check_is_recorded_and_the_next_runs():
    rows = []

    def boom():
        raise ValueError("no such kernel")

    assert common.guarded(rows, {"check": "x"}, boom) is None
    assert rows[0]["ok"] is False and "ValueError: no such kernel" in rows[0]["error"]
    assert common.guarded(rows, {"check": "y"}, lambda: 3) == 3


def test_unknown_section_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        accel_check.main(["--out", str(tmp_path), "--sections", "parity,speeed"])
    assert "speeed" in capsys.readouterr().err


def test_activation_speed_covers_every_registered_activation():
    # The full run times every activation of the registry: a new one must not break it.
    import relujax
    from benchmarks.accel import speed

    names = list(relujax.ACTIVATIONS)
    rows = speed.activation_speed(common.Budget(600.0), quick=True, names=names)["rows"]
    assert [r["function"] for r in rows] == names
    assert all("error" not in r and r["fb_ms_relujax"] > 0 and r["pct_of_copy"] > 0 for r in rows)


@pytest.mark.slow
def test_activation_tests_run_in_a_child_and_are_counted(tmp_path):
    from benchmarks.accel import correctness

    res = correctness.activation_tests(common.Budget(600.0), quick=True, out=tmp_path)
    row = res["rows"][0]
    assert row["ok"], row.get("tail") or row.get("error")
    assert row["passed"] == row["collected"] > 0 and row["failed"] == 0


@pytest.mark.slow
# optax's cosine schedule (the improved preset's) mixes a Python float with the int32 step count,
# which strict promotion refuses inside optax itself; users run standard promotion.
@pytest.mark.mixed_dtypes
def test_quick_run_end_to_end(tmp_path):
    # Every section but the activation tests (above; the suite runs those files itself). The
    # budget is generous so that a loaded CI machine skips nothing: --quick sizes are tiny.
    sections = "env,parity,scan,short_run,export,activation_speed,train_steps,improved_run"
    doc = accel_check.main(
        ["--quick", "--out", str(tmp_path), "--budget", "1200", "--sections", sections]
    )
    saved = json.loads((tmp_path / "accel_check.json").read_text())
    assert list(saved["sections"]) == sections.split(",")
    res = doc["sections"]
    for name in sections.split(","):
        assert "error" not in res[name], (name, res[name].get("error"))
        for row in res[name]["rows"]:
            assert row.get("ok") is not False, (name, row)
            assert row.get("skipped") in (None, "PyTorch not available"), (name, row)
    losses = res["short_run"]["rows"][0]["train_loss"]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert res["export"]["rows"] and all(r["ok"] for r in res["export"]["rows"])
    steps = [r for r in res["train_steps"]["rows"] if "step_ms" in r]
    assert "relujax" in {r["impl"] for r in steps} and all(r["step_ms"] > 0 for r in steps)
    assert res["improved_run"]["rows"][0]["epochs_done"] >= 1
