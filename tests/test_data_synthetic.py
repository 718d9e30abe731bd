"""The built-in synthetic set: deterministic, balanced, learnable, not one-pixel separable."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from relujax import data as rdata


@pytest.fixture(scope="module")
def two_class():
    return rdata.load_dataset("synthetic", n_train=2000, n_test=1000)


def test_deterministic_and_balanced(two_class):
    ds = two_class
    again = rdata.load_dataset("synthetic", n_train=2000, n_test=1000)
    for a, b in zip(
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        (again.x_train, again.y_train, again.x_test, again.y_test),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert ds.x_train.shape == (2000, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and np.bincount(ds.y_train).tolist() == [1000, 1000]
    assert ds.num_classes == 2 and ds.source.startswith("synthetic(")
    assert 0.3 < ds.mean.min() and ds.mean.max() < 0.7 and ds.std.min() > 0.1
    other = rdata.load_dataset("synthetic", n_train=2000, n_test=1000, seed=1)
    assert (other.x_train != ds.x_train).mean() > 0.9
    assert not np.array_equal(ds.x_train[:1000], ds.x_test)  # independent draws


def test_options():
    ds = rdata.load_dataset("synthetic", num_classes=10, n_train=100, n_test=20, image_size=16)
    assert ds.image_shape == (16, 16, 3) and ds.num_classes == len(ds.class_names) == 10
    assert np.bincount(ds.y_train).tolist() == [10] * 10
    with pytest.raises(ValueError, match="make_synthetic: num_classes must be >= 2, got 1"):
        rdata.load_dataset("synthetic", num_classes=1)
    with pytest.raises(TypeError, match="make_synthetic: n_train must be an int, got float"):
        rdata.load_dataset("synthetic", n_train=10.0)


def test_not_separable_by_one_pixel(two_class):
    """The best single-pixel threshold (chosen on train) is close to chance on test."""
    ds = two_class
    f = ds.x_train.reshape(ds.n_train, -1).astype(np.float32)
    g = ds.x_test.reshape(ds.n_test, -1).astype(np.float32)
    m0, m1 = f[ds.y_train == 0].mean(0), f[ds.y_train == 1].mean(0)
    thr, sign = (m0 + m1) / 2, np.sign(m1 - m0)
    train_acc = (((f - thr) * sign > 0) == ds.y_train[:, None]).mean(0)
    best = int(np.argmax(train_acc))
    test_acc = (((g[:, best] - thr[best]) * sign[best] > 0) == ds.y_test).mean()
    assert test_acc < 0.65, test_acc


def test_learnable_within_two_epochs(two_class):
    """A linear classifier fed by the on-device pipeline goes well above chance in 2 epochs."""
    ds = two_class
    x, y, xt, yt = rdata.put_on_device(ds)
    params = {
        "w": jnp.zeros((32 * 32 * 3, 2), jnp.float32),
        "b": jnp.zeros((2,), jnp.float32),
    }
    tx = optax.sgd(1e-3)
    opt = tx.init(params)

    def logits(p, xb):
        return xb.reshape(xb.shape[0], -1) @ p["w"] + p["b"][None, :]

    @jax.jit
    def step(p, o, idx_row):
        xb, yb = rdata.get_batch(x, y, idx_row, mean=ds.mean, std=ds.std)
        loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(logits(q, xb), yb).mean()  # noqa: E731
        grads = jax.grad(loss)(p)
        updates, o = tx.update(grads, o)
        return optax.apply_updates(p, updates), o

    @jax.jit
    def correct(p, idx_row, mask_row):
        xb, yb = rdata.get_batch(xt, yt, idx_row, mean=ds.mean, std=ds.std)
        return jnp.sum((logits(p, xb).argmax(-1).astype(jnp.int32) == yb) & mask_row)

    def accuracy(p):
        idx, mask = rdata.epoch_indices(ds.n_test, 256, seed=0, epoch=0, shuffle=False)
        return sum(int(correct(p, i, m)) for i, m in zip(idx, mask, strict=True)) / ds.n_test

    assert accuracy(params) == 0.5
    for epoch in range(2):
        idx, _ = rdata.epoch_indices(ds.n_train, 64, seed=0, epoch=epoch, drop_last=True)
        for row in idx:
            params, opt = step(params, opt, row)
    acc = accuracy(params)
    assert acc > 0.8, acc
