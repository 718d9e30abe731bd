"""`python -m train`: flags, errors and exit codes, presets, divergence, resume checks."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest
from flax import nnx

from relujax import data as rdata
from relujax import models
from relujax._src.app import cli
from relujax.train import PRESETS, resolve
from relujax.training import Checkpointer, NonFiniteLossError, TrainConfig, train

SMALL = ["--dataset", "synthetic", "--dataset-kw", "n_train=96", "--dataset-kw", "n_test=32"]


def run_main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_names_every_flag(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for flag in (
        "--preset", "--model", "--activation", "--dataset", "--data-dir", "--epochs",
        "--batch-size", "--lr", "--optimizer", "--schedule", "--warmup-epochs", "--weight-decay",
        "--augment", "--no-augment", "--seed", "--workdir", "--resume", "--dtype", "--eval-every",
        "--checkpoint-every", "--keep-checkpoints", "--log-every", "--no-progress",
    ):  # fmt: skip
        assert flag in out, flag
    assert "book-netresdeep" in out and "resnet20-cifar10" in out


def test_every_flag_comes_from_a_config_field(capsys):
    """A field declared with a help text is a flag, whose help states TrainConfig's default."""
    parser = cli.build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    flagged = [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]
    assert {f.name for f in flagged} | {"help", "list_presets", "resume"} == set(by_dest)
    defaults = TrainConfig()
    for name in ("epochs", "batch_size", "optimizer", "schedule", "log_every", "dtype"):
        assert f"default {getattr(defaults, name)}" in by_dest[name].help, name
        assert by_dest[name].default is None  # the preset, else TrainConfig, decides
    for f in flagged:
        if "choices" in f.metadata:
            assert tuple(by_dest[f.name].choices) == f.metadata["choices"], f.name
    args = parser.parse_args(["--no-progress", "--eval-mode", "train", "--model-kw", "a=1"])
    assert cli.config_fields(args) == {
        "progress": False,
        "eval_train_mode": True,
        "model_kwargs": {"a": 1},
    }


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--preset", "book-nope"], "--preset: unknown preset 'book-nope'"),
        (["--model-kw", "oops", *SMALL], "--model-kw: expected KEY=VALUE, got 'oops'"),
        (["--epochs", "0", *SMALL], "epochs must be an integer >= 1, got 0"),
        (["--model", "nonet", *SMALL], "--model: unknown model 'nonet'"),
        (["--activation", "swoosh", *SMALL], "unknown activation name 'swoosh'"),
        (["--dataset", "npz:/nonexistent/file.npz"], "/nonexistent/file.npz"),
    ],
)
def test_bad_flags_and_data_exit_2_with_one_line(argv, match, capsys, tmp_path):
    code, out, err = run_main([*argv, "--workdir", str(tmp_path / "w")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("train: error: ") and match in lines[0], lines[0]
    assert "Traceback" not in err and out == ""


def documented_flags(name):
    """The flags that preset `name`'s docstring says it equals.

    The docstring holds `python -m train --preset NAME` and then either `(= FLAGS)` or
    `(flags as OTHER, FLAGS)`: OTHER's flags followed by FLAGS.
    """
    doc = " ".join(PRESETS[name].__doc__.split())
    assert f"python -m train --preset {name} " in doc + " ", doc
    expansion = re.search(rf"--preset {name} \((= |flags as ([\w-]+), )(.*?)\)", doc)
    assert expansion, f"{name}: the docstring does not spell out its flags: {doc}"
    base = documented_flags(expansion.group(2)) if expansion.group(2) else []
    return base + expansion.group(3).split()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_the_command_in_its_docstring(name):
    """The docstring's flags, parsed by the app's parser without --preset, give the preset."""
    args = cli.build_parser().parse_args(documented_flags(name))
    from_flags = TrainConfig(**cli.config_fields(args))
    preset = TrainConfig(**resolve(name))
    assert preset.model in models.MODELS
    assert from_flags == preset.replace(preset=None)


def _params(config):
    def build():
        return models.create_model(
            config.model, rngs=nnx.Rngs(0), num_classes=2, **config.model_kwargs
        )

    abstract = nnx.eval_shape(build)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_book_presets_reproduce_the_book():
    book = {n: TrainConfig(**resolve(n)) for n in PRESETS if n.startswith("book-")}
    assert len(book) == 8
    for name, c in book.items():
        assert (c.dataset, c.optimizer, c.batch_size, c.epochs, c.seed) == (
            "cifar2", "sgd", 64, 100, 123,
        ), name  # fmt: skip
        assert (c.schedule, c.warmup_epochs, c.weight_decay, c.augment) == (
            "constant", 0.0, 0.0, False,
        ), name  # fmt: skip
        assert c.eval_train_mode, name
        assert c.shuffle == (name == "book-net"), name
        assert c.lr == (3e-3 if name == "book-netresdeep" else 1e-2), name
        assert c.l2 == (1e-3 if name == "book-l2" else 0.0), name
    models_of = {n: c.model for n, c in book.items()}
    assert models_of == {
        "book-net": "net",
        "book-netwidth": "netwidth",
        "book-l2": "net",
        "book-dropout": "netdropout",
        "book-batchnorm": "netbatchnorm",
        "book-netdepth": "netdepth",
        "book-netres": "netres",
        "book-netresdeep": "netresdeep",
    }
    # REFERENCE.md: the shared-block NetResDeep has 75,810 parameters, independent 994,530.
    assert _params(book["book-netresdeep"]) == 75_810
    assert _params(TrainConfig(**resolve("improved-netresdeep"))) == 994_530


def test_improved_and_resnet_presets():
    for name in (n for n in PRESETS if n.startswith("improved-")):
        c = TrainConfig(**resolve(name))
        assert c.shuffle and c.augment and not c.eval_train_mode, name
        assert c.optimizer == "momentum" and c.schedule == "cosine" and c.warmup_epochs > 0
        assert c.weight_decay > 0 and c.decay_filter == "kernels", name
    assert resolve("improved-netresdeep")["model_kwargs"]["shared_blocks"] is False
    for depth in (20, 32, 44, 56, 110):
        c = TrainConfig(**resolve(f"resnet{depth}-cifar10"))
        assert (c.model, c.dataset, c.batch_size, c.lr, c.momentum) == (
            f"resnet{depth}", "cifar10", 128, 0.1, 0.9,
        )  # fmt: skip
        assert (c.weight_decay, c.schedule, c.decay_at, c.epochs) == (
            1e-4,
            "step",
            (0.5, 0.75),
            182,
        )
        assert c.augment and c.shuffle and not c.eval_train_mode


def test_flags_override_the_preset():
    args = cli.build_parser().parse_args(
        ["--preset", "book-net", "--lr", "0.5", "--eval-mode", "eval", "--no-shuffle"]
    )
    fields = cli.config_fields(args)
    assert fields["lr"] == 0.5 and fields["eval_train_mode"] is False
    assert fields["shuffle"] is False and fields["model"] == "net" and fields["seed"] == 123


def test_default_dataset_falls_back_to_synthetic(monkeypatch):
    real = rdata.load_dataset

    def offline(name, data_dir=None, **kw):
        if name == "synthetic":
            return real("synthetic", n_train=8, n_test=4)
        raise rdata.DataError(f"{name}: not found in {data_dir} and offline")

    monkeypatch.setattr(rdata, "load_dataset", offline)
    notices = []
    ds, found_in = cli._default_dataset({}, notices.append)
    assert ds.name == "synthetic" and found_in is None
    assert len(notices) == 1 and "--data-dir" in notices[0] and "synthetic" in notices[0]


def test_diverging_loss_exits_1(capsys, tmp_path):
    argv = [*SMALL, "--lr", "1e12", "--optimizer", "sgd", "--workdir", str(tmp_path / "w")]
    code, _, err = run_main([*argv, "--epochs", "3", "--no-progress"], capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("train: the training loss became non-finite in epoch "), err
    assert "Try a lower --lr." in last and "Traceback" not in err


def test_divergence_keeps_the_last_good_checkpoint_and_metrics(tmp_path):
    ds = rdata.load_dataset("synthetic", n_train=96, n_test=32)
    cfg = TrainConfig(
        dataset="synthetic", epochs=1, batch_size=32, workdir=str(tmp_path), progress=False
    )
    train(cfg, dataset=ds, log=lambda s: None)
    good = Checkpointer(tmp_path / "checkpoints").steps()
    metrics = (tmp_path / "metrics.jsonl").read_text()
    poisoned = dataclasses.replace(ds, std=np.full(3, 1e-38, np.float32))  # inputs overflow
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint is step 3"):
        train(cfg.replace(epochs=3), resume=True, dataset=poisoned, log=lambda s: None)
    assert Checkpointer(tmp_path / "checkpoints").steps() == good == [3]
    assert (tmp_path / "metrics.jsonl").read_text() == metrics


def test_resume_checks_the_config(capsys, tmp_path):
    w = ["--workdir", str(tmp_path / "w"), "--no-progress"]
    base = [*SMALL, "--epochs", "1", "--batch-size", "32", *w]
    code, out, _ = run_main(base, capsys)
    assert code == 0 and json.loads(out[: out.index("}") + 1])["epochs_done"] == 1
    code, _, err = run_main(base, capsys)  # no --resume: never overwrite a run
    assert code == 2 and "already holds checkpoints" in err and "--resume" in err
    code, _, err = run_main([*base, "--resume", "--model", "net"], capsys)
    assert code == 2 and "model: checkpoint has 'netdepth', this run asks for 'net'" in err
    code, _, err = run_main([*base, "--resume", "--lr", "0.5"], capsys)
    assert code == 2 and "lr: checkpoint has 0.01, this run asks for 0.5" in err
