"""Unit tests of relujax.training: config, optimizer, steps, checkpoints, metrics, no recompiles."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import relujax.training as rt
from relujax.models import BatchNorm
from relujax.nn import PReLU
from relujax.training import Checkpointer, CheckpointError, ConfigError, TrainConfig


def test_all_is_what_is_exported():
    public = {n for n in dir(rt) if not n.startswith("_")} - {"annotations"}
    assert set(rt.__all__) == public


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("optimizer", "rmsprop", "optimizer must be one of sgd, momentum, adam, adamw"),
        ("schedule", "linear", "schedule must be one of"),
        ("epochs", 0, "epochs must be an integer >= 1, got 0"),
        ("batch_size", 2.5, "batch_size must be an integer"),
        ("lr", -1.0, "lr must be a finite number > 0, got -1.0"),
        ("lr", float("nan"), "lr must be a finite number"),
        ("weight_decay", -0.1, "weight_decay must be finite and >= 0"),
        ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
        ("dtype", "float16", "dtype must be one of float32, bfloat16"),
        ("decay_at", (0.5, 1.5), "decay_at holds fractions"),
    ],
)
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_config_round_trip_and_resume_check():
    cfg = TrainConfig(model="net", lr=0.05, model_kwargs={"n_chans1": 8}, decay_at=(0.3,))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    again.replace(epochs=50, workdir="elsewhere").check_resumable(cfg.to_dict())
    with pytest.raises(ConfigError, match=r"lr: checkpoint has 0.05, this run asks for 0.1"):
        cfg.replace(lr=0.1).check_resumable(cfg.to_dict())
    with pytest.raises(ConfigError, match="model: checkpoint has 'net'"):
        cfg.replace(model="netdepth").check_resumable(cfg.to_dict())
    with pytest.raises(ConfigError, match="unknown fields"):
        TrainConfig.from_dict({"epochs": 1, "learning_rate": 0.1})


class _Mixed(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn = BatchNorm(4)
        self.act = PReLU(4)
        self.fc = nnx.Linear(4, 2, rngs=rngs)


def test_decay_mask_excludes_biases_norms_and_prelu_slopes():
    model = _Mixed(nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    mask = rt.decay_mask(model, params)
    flat = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(mask)}
    assert flat == {
        "act/weight": False,
        "bn/bias": False,
        "bn/scale": False,
        "conv/bias": False,
        "conv/kernel": True,
        "fc/bias": False,
        "fc/kernel": True,
    }
    everything = rt.decay_mask(model, params, decay_filter="all")
    assert all(v is True for v in jax.tree.leaves(everything))


def test_weight_decay_follows_the_mask():
    model = _Mixed(nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    cfg = TrainConfig(optimizer="sgd", lr=1.0, weight_decay=0.5)
    tx, _ = rt.make_optimizer(cfg, model, params, steps_per_epoch=1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["fc"]["kernel"][...], -0.5 * params["fc"]["kernel"][...])
    np.testing.assert_array_equal(updates["act"]["weight"][...], 0.0)
    np.testing.assert_array_equal(updates["bn"]["scale"][...], 0.0)


def test_schedules_with_warmup():
    lr = lambda **kw: rt.make_schedule(TrainConfig(lr=0.1, epochs=4, **kw), 10)  # noqa: E731
    const = lr(warmup_epochs=1.0)
    assert [float(const(s)) for s in (0, 5, 10, 39)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    cos = lr(schedule="cosine")
    assert float(cos(0)) == pytest.approx(0.1)
    assert float(cos(20)) == pytest.approx(0.05)
    assert float(cos(40)) == pytest.approx(0.0, abs=1e-9)
    step = lr(schedule="step")
    assert [float(step(s)) for s in (19, 20, 29, 30)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def _linear_steps(l2=0.0):
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    gd, params, rest = nnx.split(model, nnx.Param, ...)

    def get_batch(x, y, idx, *, mean, std, dtype, augment_key):
        del augment_key
        return ((x[idx] - mean) / std).astype(dtype), y[idx]

    tx = optax.sgd(0.5)
    steps = rt.make_steps(
        gd, gd, tx, get_batch=get_batch, mean=jnp.zeros(4), std=jnp.ones(4), l2=l2
    )
    return model, params, rest, tx, steps


def test_padded_rows_do_not_count():
    """A batch of 5 real rows padded to 8 gives the loss, gradient and step of the 5 rows."""
    _, params, rest, tx, steps = _linear_steps()
    x = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1], jnp.int32)
    idx = jnp.arange(8, dtype=jnp.int32)[None]
    mask = (jnp.arange(8) < 5)[None]
    p0 = jax.tree.map(jnp.copy, params)
    new_p, _, _, m = steps.train(
        params, rest, tx.init(params), rt.zero_metrics(), x, y, idx, mask, jnp.int32(0), 0
    )

    def ref_loss(w, b):
        logits = x[:5] @ w + b
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[:5]).mean()

    w0, b0 = p0["kernel"][...], p0["bias"][...]
    loss, (gw, gb) = jax.value_and_grad(ref_loss, argnums=(0, 1))(w0, b0)
    assert int(m["count"]) == 5
    np.testing.assert_allclose(float(m["loss_sum"]) / 5, float(loss), rtol=1e-6)
    np.testing.assert_allclose(new_p["kernel"][...], w0 - 0.5 * gw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new_p["bias"][...], b0 - 0.5 * gb, rtol=1e-5, atol=1e-7)


def test_l2_term_is_added_to_the_loss():
    _, params, rest, tx, steps = _linear_steps(l2=1e-3)
    _, params2, rest2, _, plain = _linear_steps()
    x = jnp.ones((4, 4), jnp.float32)
    y = jnp.zeros((4,), jnp.int32)
    idx, mask = jnp.arange(4, dtype=jnp.int32)[None], jnp.ones((1, 4), bool)
    penalty = float(rt.l2_penalty(params))
    args = (x, y, idx, mask, jnp.int32(0), 0)
    *_, m_l2 = steps.train(params, rest, tx.init(params), rt.zero_metrics(), *args)
    *_, m = plain.train(params2, rest2, tx.init(params2), rt.zero_metrics(), *args)
    got = (float(m_l2["loss_sum"]) - float(m["loss_sum"])) / 4
    assert got == pytest.approx(1e-3 * penalty, rel=1e-4)


def test_checkpointer_keeps_last_n_and_checks_structure(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", keep=2)
    tree = {"w": jnp.arange(3.0, dtype=jnp.float32), "key": jax.random.key(7)}
    for step in (1, 2, 3):
        ckpt.save(step, jax.tree.map(lambda a: a, tree), {"epoch": step})
    assert ckpt.steps() == [2, 3]
    restored, meta = ckpt.restore(tree)
    assert meta["epoch"] == 3
    np.testing.assert_array_equal(restored["w"], tree["w"])
    key_data = jax.random.key_data
    assert key_data(restored["key"]).tolist() == key_data(tree["key"]).tolist()
    assert set(ckpt.arrays()) == {"['key']", "['w']"}
    with pytest.raises(CheckpointError, match="holds a different state"):
        ckpt.restore({"w": tree["w"], "v": tree["w"]})
    with pytest.raises(CheckpointError, match="no checkpoint 9"):
        ckpt.restore(tree, step=9)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        Checkpointer(tmp_path / "empty").restore(tree)


def test_metrics_files(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 0.7, "train_acc": 0.5, "val_loss": 0.6, "val_acc": 0.6},
        {"epoch": 2, "train_loss": 0.5, "train_acc": 0.7, "val_loss": 0.5, "val_acc": 0.8},
        {"epoch": 3, "train_loss": 0.4, "train_acc": 0.8, "val_loss": 0.55, "val_acc": 0.75},
    ]
    rt.write_metrics(tmp_path, history)
    assert rt.read_metrics(tmp_path) == history
    s = rt.summarize(history)
    assert (s["best_val_acc"], s["best_epoch"], s["final_val_acc"]) == (0.8, 2, 0.75)
    path = rt.plot_curves(tmp_path, history)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_recompilation_across_epochs_and_partial_batches(tmp_path):
    """After the first epoch nothing compiles: not the next epochs, not their partial batch."""
    from relujax.data import load_dataset

    ds = load_dataset("synthetic", n_train=100, n_test=40, image_size=32)  # 100 = 3 * 32 + 4
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *a, **k: compiles.append(event) if "backend_compile" in event else None
    )
    at_epoch_end = []

    def log(line):
        if line.startswith("epoch "):
            at_epoch_end.append(len(compiles))

    cfg = TrainConfig(
        model="netdepth",
        dataset="synthetic",
        epochs=3,
        batch_size=32,
        workdir=str(tmp_path / "run"),
        progress=False,
    )
    summary = rt.train(cfg, dataset=ds, log=log)
    assert summary["epochs_done"] == 3
    assert len(at_epoch_end) == 3 and at_epoch_end[0] > 0
    assert at_epoch_end[2] == at_epoch_end[0], f"compiles after epochs 1..3: {at_epoch_end}"


def test_models_that_take_a_mask_get_the_row_mask():
    seen = []

    class Masked(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(4, 2, rngs=nnx.Rngs(0))

        def __call__(self, x, *, mask=None):
            seen.append(None if mask is None else mask.shape)
            return self.fc(x)

    gd, params, rest = nnx.split(Masked(), nnx.Param, ...)

    def get_batch(x, y, idx, *, mean, std, dtype, augment_key):
        return x[idx].astype(dtype), y[idx]

    tx = optax.sgd(0.1)
    steps = rt.make_steps(gd, gd, tx, get_batch=get_batch, mean=0.0, std=1.0)
    x, y = jnp.ones((4, 4), jnp.float32), jnp.zeros((4,), jnp.int32)
    idx, mask = jnp.arange(4, dtype=jnp.int32)[None], jnp.ones((1, 4), bool)
    opt, zeros = tx.init(params), rt.zero_metrics()
    params, rest, *_ = steps.train(params, rest, opt, zeros, x, y, idx, mask, 0, 0)
    steps.evaluate(params, rest, rt.zero_metrics(), x, y, idx, mask, 0)
    assert seen == [(4,), (4,)]


def test_batchnorm_model_padded_batch_steps_match_unpadded():
    """NetBatchNorm: a train and a train-mode eval step on 5 real rows padded to 8 give the
    loss, parameters and BatchNorm running statistics of the same steps on the 5 rows alone."""
    from relujax.models import NetBatchNorm

    model = NetBatchNorm(n_chans1=4, rngs=nnx.Rngs(0))
    model.train()
    gd, params, rest = nnx.split(model, nnx.Param, ...)

    def get_batch(x, y, idx, *, mean, std, dtype, augment_key):
        return x[idx].astype(dtype), y[idx]

    tx = optax.sgd(0.1)
    steps = rt.make_steps(gd, gd, tx, get_batch=get_batch, mean=0.0, std=1.0, eval_train_mode=True)
    x = jax.random.normal(jax.random.key(0), (5, 32, 32, 3), jnp.float32)
    y = jnp.array([0, 1, 1, 0, 1], jnp.int32)
    padded = (jnp.array([[0, 1, 2, 3, 4, 0, 1, 2]], jnp.int32), (jnp.arange(8) < 5)[None])
    plain = (jnp.arange(5, dtype=jnp.int32)[None], jnp.ones((1, 5), bool))
    results = []
    for idx, mask in (padded, plain):
        p, r = jax.tree.map(jnp.copy, (params, rest))
        p, r, _, m = steps.train(p, r, tx.init(p), rt.zero_metrics(), x, y, idx, mask, 0, 0)
        r, e = steps.evaluate(p, r, rt.zero_metrics(), x, y, idx, mask, 0)
        results.append((p, r, float(m["loss_sum"]), float(e["loss_sum"])))
    (p8, r8, loss8, eval8), (p5, r5, loss5, eval5) = results
    assert loss8 == pytest.approx(loss5, rel=1e-5) and eval8 == pytest.approx(eval5, rel=1e-5)
    stats8, stats5 = (nnx.filter_state(r, nnx.BatchStat) for r in (r8, r5))
    assert len(jax.tree.leaves(stats5)) == 4
    for a, b in zip(jax.tree.leaves(stats8), jax.tree.leaves(stats5), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p5), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_step_with_float32_parameters_under_strict_promotion():
    """A bf16 NetBatchNorm with a PReLU (f32 slope) trains under strict promotion (the suite's
    default): parameters, running statistics and metrics keep their dtypes, and the step gives
    bit for bit what it gives under standard promotion."""
    from relujax.models import NetBatchNorm

    model = NetBatchNorm(n_chans1=4, activation=PReLU(), dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    model.train()
    gd, params, rest = nnx.split(model, nnx.Param, ...)

    def get_batch(x, y, idx, *, mean, std, dtype, augment_key):
        return x[idx].astype(dtype), y[idx]

    tx = optax.sgd(0.1)
    steps = rt.make_steps(
        gd, gd, tx, get_batch=get_batch, mean=0.0, std=1.0, dtype=jnp.bfloat16, l2=1e-3
    )
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3), jnp.float32)
    y = jnp.array([0, 1, 1, 0], jnp.int32)
    idx, mask = jnp.arange(4, dtype=jnp.int32)[None], jnp.ones((1, 4), bool)

    def step():  # on copies: the step donates its state
        p, r = jax.tree.map(jnp.copy, (params, rest))
        return steps.train(p, r, tx.init(p), rt.zero_metrics(), x, y, idx, mask, 0, 0)

    strict = step()
    with jax.numpy_dtype_promotion("standard"):
        standard = step()
    new_params, new_rest, _, metrics = strict
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new_params))
    stats = nnx.filter_state(new_rest, nnx.BatchStat)
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(stats))
    assert metrics["loss_sum"].dtype == jnp.float32 and np.isfinite(float(metrics["loss_sum"]))
    assert int(metrics["count"]) == 4
    for a, b in zip(jax.tree.leaves(strict), jax.tree.leaves(standard), strict=True):
        np.testing.assert_array_equal(a, b)
