"""relujax.data pipeline: epoch order, augmentation, on-device batches, sharding."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relujax import data as rdata


def test_public_api_matches_all():
    public = {n for n in dir(rdata) if not n.startswith("_")} - {"annotations"}
    assert set(rdata.__all__) == public


# ---- epoch_indices --------------------------------------------------------------------------


@pytest.mark.parametrize("enable_x64", [False, pytest.param(True, marks=pytest.mark.x64)], ids=str)
@pytest.mark.parametrize("n,bs", [(10, 3), (12, 4), (5, 8)])
def test_epoch_is_a_permutation_with_padding_masked(n, bs, enable_x64):
    idx, mask = rdata.epoch_indices(n, bs, seed=3, epoch=1)
    assert jax.config.jax_enable_x64 == enable_x64
    assert idx.shape == mask.shape == (-(-n // bs), bs)
    assert idx.dtype == jnp.int32 and mask.dtype == jnp.bool_  # with x64 enabled too
    real = np.asarray(idx)[np.asarray(mask)]
    assert sorted(real.tolist()) == list(range(n))  # every example exactly once
    assert np.asarray(mask).sum() == n and np.asarray(mask).ravel()[:n].all()
    assert ((np.asarray(idx) >= 0) & (np.asarray(idx) < n)).all()  # padding is valid too


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a, _ = rdata.epoch_indices(1000, 100, seed=0, epoch=4)
    b, _ = rdata.epoch_indices(1000, 100, seed=0, epoch=4)
    np.testing.assert_array_equal(a, b)
    want = jax.random.permutation(jax.random.fold_in(jax.random.key(0), 4), 1000)
    np.testing.assert_array_equal(a.ravel(), want)
    for other in (dict(seed=0, epoch=5), dict(seed=1, epoch=4)):
        c, _ = rdata.epoch_indices(1000, 100, **other)
        assert (np.asarray(c) != np.asarray(a)).mean() > 0.9
    assert not np.array_equal(np.asarray(a).ravel(), np.arange(1000))


def test_book_options_unshuffled_and_drop_last():
    idx, mask = rdata.epoch_indices(10, 4, seed=0, epoch=7, shuffle=False)
    assert idx.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert mask.tolist()[-1] == [True, True, False, False]
    idx, mask = rdata.epoch_indices(10, 4, seed=0, epoch=0, drop_last=True)
    assert idx.shape == (2, 4) and bool(mask.all()) and len(set(idx.ravel().tolist())) == 8


def test_epoch_indices_errors():
    with pytest.raises(ValueError, match=r"drop_last=True with n=3 < batch_size=4"):
        rdata.epoch_indices(3, 4, seed=0, epoch=0, drop_last=True)
    with pytest.raises(ValueError, match="epoch_indices: batch_size must be >= 1, got 0"):
        rdata.epoch_indices(3, 0, seed=0, epoch=0)
    with pytest.raises(TypeError, match="epoch_indices: n must be an int, got float"):
        rdata.epoch_indices(3.0, 2, seed=0, epoch=0)


# ---- augment --------------------------------------------------------------------------------


def _images(n=16, h=8, w=8, c=3, dtype=np.uint8):
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (n, h, w, c)).astype(dtype)  # no zeros: padding is visible


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_augment_keeps_shape_dtype_and_is_deterministic(dtype):
    x = jnp.asarray(_images(dtype=dtype))
    a = rdata.augment(jax.random.key(0), x)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, rdata.augment(jax.random.key(0), x))
    assert not np.array_equal(a, rdata.augment(jax.random.key(1), x))


def test_flip_is_the_mirrored_image():
    x = _images(n=64)
    out = np.asarray(rdata.augment(jax.random.key(2), x, pad=0))
    same = (out == x).all(axis=(1, 2, 3))
    mirrored = (out == x[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all()
    assert 16 < mirrored.sum() < 48  # one coin per image, about half flipped


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    pad = 4
    x = _images(n=64)
    out = np.asarray(rdata.augment(jax.random.key(3), x, pad=pad, flip=False))
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = []
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(out[i], padded[i, dy : dy + 8, dx : dx + 8])
        ]
        assert len(hits) == 1, f"image {i} is not a window of its padded original"
        offsets.append(hits[0])
    assert len(set(offsets)) > 20  # one draw per image, spread over the 81 offsets
    assert (out == 0).any() and (out[[o == (pad, pad) for o in offsets]] != 0).all()


def test_augment_errors():
    with pytest.raises(ValueError, match=r"augment: expected images \(N, H, W, C\), got shape"):
        rdata.augment(jax.random.key(0), jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="augment: pad must be >= 0, got -1"):
        rdata.augment(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), pad=-1)


# ---- get_batch, normalize, put_on_device ------------------------------------------------


@pytest.fixture(scope="module")
def small():
    ds = rdata.load_dataset("synthetic", num_classes=3, n_train=50, n_test=7, image_size=8)
    return ds, rdata.put_on_device(ds)


def test_put_on_device(small):
    ds, (x, y, xt, yt) = small
    assert x.dtype == jnp.uint8 and y.dtype == yt.dtype == jnp.int32
    np.testing.assert_array_equal(xt, ds.x_test)
    with pytest.raises(TypeError, match="put_on_device: expected a relujax.data.Dataset, got dict"):
        rdata.put_on_device({})


def test_get_batch_equals_the_numpy_reference(small):
    ds, (x, y, _, _) = small
    idx, _ = rdata.epoch_indices(ds.n_train, 16, seed=0, epoch=0)
    fn = jax.jit(lambda i: rdata.get_batch(x, y, i, mean=ds.mean, std=ds.std))
    xb, yb = fn(idx[1])
    rows = np.asarray(idx[1])
    want = (ds.x_train[rows].astype(np.float64) / 255 - ds.mean) / ds.std
    assert xb.dtype == jnp.float32 and yb.dtype == jnp.int32 and xb.shape == (16, 8, 8, 3)
    np.testing.assert_allclose(xb, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(yb, ds.y_train[rows])

    xh, _ = rdata.get_batch(x, y, idx[1], mean=ds.mean, std=ds.std, dtype=jnp.bfloat16)
    assert xh.dtype == jnp.bfloat16
    np.testing.assert_allclose(xh.astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_get_batch_augments_raw_pixels_then_normalises(small):
    ds, (x, y, _, _) = small
    rows = jnp.arange(10, 30, dtype=jnp.int32)
    key = jax.random.key(5)
    xb, _ = jax.jit(lambda i, k: rdata.get_batch(x, y, i, mean=ds.mean, std=ds.std, augment_key=k))(
        rows, key
    )
    want = rdata.normalize(rdata.augment(key, ds.x_train[10:30]), ds.mean, ds.std)
    np.testing.assert_allclose(xb, want, rtol=1e-6, atol=1e-6)
    # The padding is black: its normalised value is -mean / std.
    np.testing.assert_allclose(np.asarray(xb).min(axis=(0, 1, 2)), -ds.mean / ds.std, rtol=1e-5)


def test_normalize_float_images_and_errors():
    out = rdata.normalize(jnp.full((1, 2, 2, 2), 0.5, jnp.float32), [0.25, 0.5], [0.5, 1.0])
    np.testing.assert_allclose(out[0, 0, 0], [0.5, 0.0])
    with pytest.raises(TypeError, match="normalize: images must be uint8 .* got int16"):
        rdata.normalize(jnp.zeros((1, 2, 2, 1), jnp.int16), [0.0], [1.0])
    with pytest.raises(ValueError, match=r"mean and std must have shape \(3,\)"):
        rdata.normalize(jnp.zeros((1, 2, 2, 3), jnp.uint8), [0.0], [1.0])


def test_get_batch_errors(small):
    ds, (x, y, _, _) = small
    kw = dict(mean=ds.mean, std=ds.std)
    with pytest.raises(ValueError, match="get_batch: idx_row must be a 1-D integer array"):
        rdata.get_batch(x, y, jnp.zeros((2, 3), jnp.int32), **kw)
    with pytest.raises(ValueError, match=r"get_batch: y must be labels of shape \(50,\)"):
        rdata.get_batch(x, y[:5], jnp.arange(3), **kw)


def test_evaluation_counts_every_test_image_once(small):
    ds, (_, _, xt, yt) = small
    idx, mask = rdata.epoch_indices(ds.n_test, 4, seed=0, epoch=0, shuffle=False)
    seen = []
    for i, m in zip(idx, mask, strict=True):
        _, yb = rdata.get_batch(xt, yt, i, mean=ds.mean, std=ds.std)
        seen += np.asarray(yb)[np.asarray(m)].tolist()
    assert seen == ds.y_test.tolist()


# ---- sharding ---------------------------------------------------------------------------------


def test_single_device_mesh_in_process(small):
    ds, _ = small
    mesh = rdata.data_mesh()
    assert mesh.axis_names == ("data",)
    x, y, _, _ = rdata.put_on_device(ds, rdata.replicated_sharding(mesh))
    sharding = rdata.batch_sharding(mesh)
    xb, yb = jax.jit(
        lambda i: rdata.get_batch(x, y, i, mean=ds.mean, std=ds.std, sharding=sharding)
    )(jnp.arange(8))
    assert xb.sharding.is_equivalent_to(sharding, 4) and yb.shape == (8,)
    with pytest.raises(ValueError, match="batch_sharding: the mesh needs a 'data' axis"):
        rdata.batch_sharding(jax.make_mesh((1,), ("batch",)))


@pytest.mark.slow
@pytest.mark.x64
def test_batches_split_over_two_devices():
    """A fresh process with 2 CPU devices (and x64 off): each holds half of every batch."""
    code = textwrap.dedent(
        """
        import jax, numpy as np
        from relujax import data as rdata
        assert jax.device_count() == 2, jax.devices()
        ds = rdata.load_dataset("synthetic", n_train=64, n_test=8, image_size=8)
        mesh = rdata.data_mesh()
        x, y, _, _ = rdata.put_on_device(ds, rdata.replicated_sharding(mesh))
        sh = rdata.batch_sharding(mesh)
        idx, _ = rdata.epoch_indices(64, 16, seed=0, epoch=0)
        step = jax.jit(lambda i, k: rdata.get_batch(
            x, y, i, mean=ds.mean, std=ds.std, augment_key=k, sharding=sh))
        xb, yb = step(idx[0], jax.random.key(0))
        shards = xb.addressable_shards
        assert len(shards) == 2 and {s.data.shape for s in shards} == {(8, 8, 8, 3)}
        ref = rdata.normalize(rdata.augment(jax.random.key(0), ds.x_train[np.asarray(idx[0])]),
                              ds.mean, ds.std)
        np.testing.assert_allclose(np.asarray(xb), np.asarray(ref), rtol=1e-6, atol=1e-6)
        assert not jax.config.jax_enable_x64
        print(np.asarray(idx).ravel().tolist())
        print(np.asarray(rdata.augment(jax.random.key(9), ds.x_train)).ravel().tolist())
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # The same order, crops and flips with jax_enable_x64 (this process) as without (that one).
    ds = rdata.load_dataset("synthetic", n_train=64, n_test=8, image_size=8)
    idx, _ = rdata.epoch_indices(64, 16, seed=0, epoch=0)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == str(np.asarray(idx).ravel().tolist())
    aug = rdata.augment(jax.random.key(9), ds.x_train)
    assert lines[1] == str(np.asarray(aug).ravel().tolist())
