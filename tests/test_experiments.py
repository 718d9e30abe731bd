"""train/experiments: the study runner and report, the reproduction report, the ReLU'(0) run."""

import argparse
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from relujax import data as rdata
from relujax.train import PRESETS
from train.experiments import (
    depth_scale,
    eval_modes,
    init_loss,
    relu_prime,
    report,
    shared_bn,
    study,
    study_report,
)
from train.experiments.book_targets import BOOK, IMPROVED, targets


def test_every_target_names_a_preset():
    for name in [*BOOK, *IMPROVED]:
        assert name in PRESETS or name == "improved-netresdeep10", name  # (10 blocks)
    for _, book, _ in IMPROVED.values():
        assert book in BOOK
    label, params, train, val, target = targets("improved-netres")
    assert (params, train, val, target) == (BOOK["book-netres"][1:] + (0.92,))
    assert targets("book-net")[-1] is None and targets("whatever")[1:] == (None,) * 4


@pytest.mark.parametrize(
    "model, flags",
    [("netres", ["--preset", "improved-netres"]),
     ("netresdeep:10", ["--preset", "improved-netresdeep", "--model-kw", "n_blocks=10"])],
)  # fmt: skip
def test_study_command(model, flags, tmp_path):
    cmd = study.run_command(model, "gelu", 3, tmp_path / "w")
    assert cmd[1:3] == ["-m", "train"]
    assert cmd[3 : 3 + len(flags)] == flags
    assert cmd[cmd.index("--activation") + 1] == "gelu" and cmd[cmd.index("--seed") + 1] == "3"
    assert study.run_name(model, "gelu", 3) == f"{model.replace(':', '')}-gelu-s3"


@pytest.mark.parametrize("bad", ["resnet20", "netresdeep:ten"])
def test_study_rejects_unknown_model(bad, tmp_path):
    with pytest.raises(SystemExit, match=r"--models.*" + bad):
        study.run_command(bad, "relu", 0, tmp_path)


def test_study_dry_run_skips_finished(tmp_path, capsys):
    done = tmp_path / "netres-relu-s0"
    done.mkdir()
    (done / "summary.json").write_text("{}")
    argv = ["--out", str(tmp_path), "--models", "netres", "--activations", "relu", "elu"]
    assert study.main([*argv, "--dry-run", "--", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "netres-relu-s0 done, skipped" in out
    assert "--activation elu" in out and out.rstrip().endswith("--epochs 3")


def _fake_run(folder, accs, flats):
    folder.mkdir(parents=True)
    lines = [
        {
            "epoch": i + 1,
            "train_acc": a,
            "val_acc": a - 0.01,
            "seconds": 2.0,
            "dead_units": {
                "act1": {"flat": f, "dead_channels": f / 2},
                "act2": {"flat": f, "dead_channels": 0.0},
            },
        }  # fmt: skip
        for i, (a, f) in enumerate(zip(accs, flats, strict=True))
    ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (folder / "summary.json").write_text("{}")


def test_study_report_pools_seeds_and_plots(tmp_path, capsys):
    _fake_run(tmp_path / "netres-relu-s0", [0.8, 0.9], [0.5, 0.6])
    _fake_run(tmp_path / "netres-relu-s1", [0.8, 0.7], [0.5, 0.2])
    _fake_run(tmp_path / "netres-gelu-s0", [0.8, 0.95], [0.0, 0.0])
    (tmp_path / "not-a-run").mkdir()
    out = tmp_path / "out"
    assert study_report.main([str(tmp_path), "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    relu = next(line for line in text.splitlines() if "| relu |" in line)
    assert "| 2 | 2 |" in relu  # seeds, epochs
    assert "0.790 ± 0.141" in relu  # final val over the two seeds: 0.89, 0.69
    assert "0.400 ± 0.283" in relu  # last epoch's mean flat fraction: 0.6, 0.2
    assert text.index("| relu |") < text.index("| gelu |")  # study order
    for name in ("val.png", "dead_netres.png"):
        assert (out / name).stat().st_size > 1000


def test_study_report_errors_without_runs(tmp_path):
    with pytest.raises(SystemExit) as e:
        study_report.main([str(tmp_path)])
    assert e.value.code == 2


def test_report_marks_improved_targets(tmp_path, capsys):
    _fake_run(tmp_path / "improved-netres", [0.9, 0.95], [0.1, 0.1])
    assert report.main([str(tmp_path), "--plot", str(tmp_path / "c.png")]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if "improved-netres" in x)
    assert "| 0.92 |" in row and "| 0.97 | 0.90 |" in row  # target, the book's NetRes
    _fake_run(tmp_path / "book-net", [0.9, 0.93], [0.0, 0.0])
    assert report.main([str(tmp_path), "--only", "book-*"]) == 0
    out = capsys.readouterr().out
    assert "| book-net |" in out and "improved-netres" not in out


@pytest.mark.parametrize("subgradient", [0.0, 1.0])
def test_counting_relu_counts_zeros_and_uses_the_subgradient(subgradient):
    layer = relu_prime.counting_relu(subgradient)()
    x = jnp.array([-1.0, 0.0, 0.0, 2.0])
    grad = nnx.grad(lambda m, x: jnp.sum(m(x)), argnums=1)(layer, x)
    np.testing.assert_array_equal(grad, [0.0, subgradient, subgradient, 1.0])
    np.testing.assert_array_equal(layer.zeros[...], [2.0, 4.0])


def test_relu_prime_run_seed_on_synthetic(tmp_path):
    ds = rdata.load_dataset("synthetic", n_train=128, n_test=64)
    a = argparse.Namespace(
        model="netres", dtype="bfloat16", epochs=1, lr=1e-2, batch_size=64, check_every=1
    )
    r = relu_prime.run_seed(a, ds, seed=0)
    assert [c["step"] for c in r["checks"]] == [0, 1]
    assert r["distance"][0]["rel"] == 0.0  # same start
    for c in r["checks"]:
        for name in ("float32", "bfloat16"):
            assert len(c[name]["zero_fraction"]) == 4  # NetRes has four ReLUs
            assert c[name]["changed"] <= c[name]["any_zero"]  # no zero, no difference
    s = relu_prime.summarize([r], ["float32", "bfloat16"])
    assert 0.0 <= s["bfloat16"]["gradient_changed_share"] <= 1.0
    assert 0.0 <= r["epochs"][0]["val_s0"] <= 1.0
    relu_prime.plot([r], ["float32", "bfloat16"], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize("model, same", [("net", True), ("netbatchnorm", False)])
def test_eval_modes_restores_and_evaluates_both_ways(model, same, tmp_path, capsys):
    from relujax.training import TrainConfig, train

    work = tmp_path / model
    cfg = TrainConfig(
        model=model,
        dataset="synthetic",
        dataset_kwargs={"n_train": 64, "n_test": 48},
        batch_size=16,
        epochs=1,
        workdir=str(work),
        progress=False,
    )
    summary = train(cfg, log=lambda line: None)
    r = eval_modes.evaluate_both(work, None, repeats=2)
    assert r["logged_val"] == pytest.approx(summary["final_val_acc"])
    assert r["eval_mode"] == pytest.approx(summary["final_val_acc"])  # the run evaluated so
    if same:  # no BatchNorm, no Dropout: training mode changes nothing
        assert r["train_mode"] == [r["eval_mode"]] * 2
    assert all(0.0 <= v <= 1.0 for v in r["train_mode"])
    assert eval_modes.main([str(work), "--repeats", "1"]) == 0
    assert f"| {model} | 1 |" in capsys.readouterr().out


def test_eval_modes_rejects_unfinished_folder(tmp_path):
    with pytest.raises(SystemExit):
        eval_modes.main([str(tmp_path)])


def test_shared_bn_matches_the_model_and_explains_eval_mode(tmp_path, capsys):
    from relujax.training import TrainConfig, train

    work = tmp_path / "shared"
    cfg = TrainConfig(
        model="netresdeep",
        model_kwargs={"n_blocks": 4, "shared_blocks": True, "n_chans1": 4},
        dataset="synthetic",
        dataset_kwargs={"n_train": 64, "n_test": 40},
        batch_size=16,
        epochs=1,
        workdir=str(work),
        progress=False,
    )
    summary = train(cfg, log=lambda line: None)
    r = shared_bn.analyse(work, None, batch_size=16)
    assert r["check"]["train_mode_max_abs_diff"] < 1e-4, r["check"]  # our forward is the model's
    assert r["check"]["eval_mode_max_abs_diff"] < 1e-4, r["check"]
    assert r["val_eval_mode_shared_stats"] == pytest.approx(summary["final_val_acc"])
    assert 0.0 <= r["val_eval_mode_per_depth_stats"] <= 1.0
    assert len(r["mean_shift_in_running_sd"]) == len(r["var_over_running_var"]) == 4
    out = tmp_path / "out"
    args = [str(work), "--json", str(out / "r.json"), "--plot", str(out / "r.png")]
    assert shared_bn.main(args) == 0
    assert "each depth's own statistics" in capsys.readouterr().out
    assert (out / "r.png").stat().st_size > 1000 and json.loads((out / "r.json").read_text())


def test_shared_bn_refuses_other_runs(tmp_path):
    with pytest.raises(SystemExit, match="summary.json"):
        shared_bn.main([str(tmp_path)])


def test_init_loss_per_seed(capsys):
    small = {"dataset": "synthetic", "dataset_kwargs": {"n_train": 32, "n_test": 8}}
    small["model_kwargs"] = {"n_blocks": 3, "shared_blocks": True, "n_chans1": 4}
    a = init_loss.losses("book-netresdeep", [0, 1, 0], None, **small)
    assert a[0] == a[2] != a[1] and all(v > 0 for v in a)  # a function of the seed alone
    assert init_loss._seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(argparse.ArgumentTypeError):
        init_loss._seeds("a-b")
    assert init_loss.main(["no-such-preset"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_depth_scale_stream_grows_with_depth(capsys):
    # Each ReLU block adds a non-negative term to the stream (the first blocks' weights are the
    # same at every depth for one seed), so fc1's input can only grow with the depth.
    small = {"n_train": 16, "n_test": 4}
    rows = depth_scale.measure([1, 4], None, batch=8, dataset="synthetic", **small)
    assert [r["depth"] for r in rows] == [1, 4]
    assert rows[1]["fc1_input_mean"] > rows[0]["fc1_input_mean"] > 0
    assert all(0 <= r["negative_for_every_image"] <= r["units"] == 32 for r in rows)
    for bad in ("1,x", "0,3"):
        with pytest.raises(SystemExit):
            depth_scale.main(["--depths", bad])
    assert "--depths" in capsys.readouterr().err


def test_study_report_dead_plot_of_any_run(tmp_path):
    _fake_run(tmp_path / "some-run", [0.8, 0.9], [0.5, 0.9])
    out = tmp_path / "out"
    assert study_report.main(["--dead-plot", str(tmp_path / "some-run"), "--out", str(out)]) == 0
    assert (out / "dead.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        study_report.main(["--dead-plot", str(tmp_path / "missing"), "--out", str(out)])
