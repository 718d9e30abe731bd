"""relujax.data sources: MNIST idx files, a user's npz, and load_dataset's argument checks."""

import gzip
import hashlib
import os
import pathlib

import numpy as np
import pytest

from relujax import data as rdata
from relujax._src.data import mnist
from relujax._src.data.download import Resource


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _flip(payload: bytes, at: int) -> bytes:
    b = bytearray(payload)
    b[at] ^= 0xFF
    return bytes(b)


def _resource(src: pathlib.Path, filename: str) -> Resource:
    payload = src.read_bytes()
    return Resource(filename, src.as_uri(), len(payload), hashlib.md5(payload).hexdigest())


# ---- MNIST --------------------------------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _mnist_files(folder: pathlib.Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (30, 28, 28)),
        "train_labels": np.arange(30) % 10,
        "test_images": rng.integers(0, 256, (10, 28, 28)),
        "test_labels": np.arange(10)[::-1],
    }
    folder.mkdir(exist_ok=True)
    for key, res in mnist.MNIST_RESOURCES.items():
        (folder / res.filename).write_bytes(gzip.compress(_idx(arrays[key])))
    return arrays


def test_mnist_from_idx_files(tmp_path):
    arrays = _mnist_files(tmp_path)
    ds = rdata.load_dataset("mnist", tmp_path, download=False)
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.num_classes == 10 and ds.mean.shape == (1,)
    np.testing.assert_allclose(ds.mean, arrays["train_images"].mean() / 255, rtol=1e-5)


@pytest.mark.parametrize(
    "key,payload,message",
    [
        ("train_images", lambda b: b[: len(b) // 2], "truncated or corrupted gzip"),
        (
            "train_images",
            lambda b: gzip.compress(gzip.decompress(b)[:-5]),
            r"declares shape \(30, 28, 28\)",
        ),
        (
            "test_labels",
            lambda b: gzip.compress(b"\x00\x00\x0d\x01" + gzip.decompress(b)[4:]),
            "type code 0x0d",
        ),
        (
            "test_labels",
            lambda b: gzip.compress(b"PK\x03\x04" + gzip.decompress(b)[4:]),
            "bad magic",
        ),
        ("test_labels", lambda b: gzip.compress(_idx(np.arange(9))), "9 labels for 10 images"),
        ("train_labels", lambda b: gzip.compress(_idx(np.full(30, 11))), "label 11"),
    ],
)
def test_mnist_corruptions(tmp_path, key, payload, message):
    _mnist_files(tmp_path)
    path = tmp_path / mnist.MNIST_RESOURCES[key].filename
    path.write_bytes(payload(path.read_bytes()))
    before = _snapshot(tmp_path)
    with pytest.raises(rdata.DataError, match=message) as err:
        rdata.load_dataset("mnist", tmp_path, download=False)
    assert mnist.MNIST_RESOURCES[key].filename in str(err.value)
    assert _snapshot(tmp_path) == before


def test_mnist_download_and_offline(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    _mnist_files(mirror)
    resources = {
        k: _resource(mirror / r.filename, r.filename) for k, r in mnist.MNIST_RESOURCES.items()
    }
    monkeypatch.setattr(mnist, "MNIST_RESOURCES", resources)
    with pytest.raises(
        rdata.DataError, match=r"train-images-idx3-ubyte\.gz is not in .*downloading is off"
    ):
        rdata.load_dataset("mnist", tmp_path / "data", download=False)
    ds = rdata.load_dataset("mnist", tmp_path / "data", progress=False)
    assert ds.n_train == 30 and sorted(os.listdir(tmp_path / "data")) == sorted(
        r.filename for r in resources.values()
    )


# ---- user npz -----------------------------------------------------------------------------


def _npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = dict(
        x_train=rng.integers(0, 256, (6, 8, 8, 3), np.uint8),
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        x_test=rng.integers(0, 256, (3, 8, 8, 3), np.uint8),
        y_test=np.array([2, 1, 0]),
    )
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_npz_valid_variants(tmp_path, monkeypatch):
    ds = rdata.load_dataset(f"npz:{_npz(tmp_path / 'a.npz')}")
    assert (ds.num_classes, ds.class_names, ds.image_shape) == (3, ("0", "1", "2"), (8, 8, 3))
    np.testing.assert_allclose(ds.mean, ds.x_train.reshape(-1, 3).mean(0) / 255, rtol=1e-5)
    np.testing.assert_allclose(ds.std, ds.x_train.reshape(-1, 3).std(0) / 255, rtol=1e-4)

    gray = _npz(
        tmp_path / "g.npz",
        x_train=np.zeros((6, 5, 7), np.uint8),
        x_test=np.ones((3, 5, 7), np.uint8),
        class_names=np.array(["a", "b", "c", "d"]),
    )
    ds = rdata.load_dataset(f"npz:{gray}")
    assert (
        ds.x_train.shape == (6, 5, 7, 1)
        and ds.class_names == ("a", "b", "c", "d")
        and ds.num_classes == 4
    )
    assert ds.std.tolist() == [1.0]  # a constant channel: std 0 is replaced, no inf inputs

    floats = _npz(
        tmp_path / "f.npz",
        x_train=np.full((6, 4, 4, 3), 0.25),
        x_test=np.zeros((3, 4, 4, 3), np.float16),
    )
    ds = rdata.load_dataset(f"npz:{floats}")
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32

    monkeypatch.chdir(tmp_path.parent)
    ds = rdata.load_dataset("npz:a.npz", tmp_path)  # a relative path found in the data folder
    assert ds.source == str(tmp_path / "a.npz")


@pytest.mark.parametrize(
    "arrays,message",
    [
        (dict(y_test=None), r"missing arrays \['y_test'\]"),
        (
            dict(x_train=np.zeros((6, 64), np.uint8)),
            r"x_train must be images NHWC .* got shape \(6, 64\)",
        ),
        (
            dict(x_test=np.zeros((3, 8, 8, 3), np.int16)),
            "x_test must have dtype uint8 .* got int16",
        ),
        (
            dict(y_train=np.array([0.0, 1, 2, 0, 1, 2])),
            "y_train must have an integer dtype, got float64",
        ),
        (dict(y_train=np.array([0, -1, 2, 0, 1, 2])), "negative label"),
        (dict(y_test=np.array([2, 1])), "x_test has 3 images but y_test has 2 labels"),
        (dict(x_test=np.zeros((3, 8, 9, 3), np.uint8)), "train and test images differ in shape"),
        (dict(x_train=np.full((6, 8, 8, 3), np.nan)), "x_train contains NaN"),
        (dict(x_test=np.zeros((3, 8, 8, 3), np.float32)), "x_train is uint8 but x_test is float32"),
        (dict(y_train=np.zeros(6, int), y_test=np.zeros(3, int)), "at least 2 classes"),
        (dict(class_names=np.array(["a", "b"])), r"labels must be in \[0, 2\), found label 2"),
        (
            dict(y_train=np.array([[0, 1, 2, 0, 1, 2]])),
            r"y_train must be integer labels of shape \(N,\)",
        ),
        (dict(x_train=np.array([None] * 6, dtype=object)), "unreadable without pickle"),
    ],
)
def test_npz_errors_name_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(rdata.DataError, match=message) as err:
        rdata.load_dataset(f"npz:{path}")
    assert str(path) in str(err.value)


def test_npz_unreadable_files(tmp_path):
    good = _npz(tmp_path / "good.npz").read_bytes()
    cases = {
        "missing.npz": None,
        "text.npz": b"x_train,y_train\n1,2\n",
        "truncated.npz": good[: len(good) // 2],
        "flipped.npz": _flip(good, at=400),  # inside x_train's pixels: the CRC catches it
    }
    for name, payload in cases.items():
        if payload is not None:
            (tmp_path / name).write_bytes(payload)
        with pytest.raises(
            rdata.DataError, match=rf"{name}: .*(no such file|not a valid|corrupted)"
        ):
            rdata.load_dataset(f"npz:{tmp_path / name}")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(rdata.DataError, match="single .npy array"):
        rdata.load_dataset(f"npz:{tmp_path / 'single.npy'}")


def test_load_dataset_argument_errors(tmp_path):
    with pytest.raises(
        rdata.DataError, match=r"unknown dataset 'cifar100'; expected one of \['cifar2'"
    ):
        rdata.load_dataset("cifar100", tmp_path)
    with pytest.raises(
        TypeError, match=r"unexpected keyword arguments \['n_train'\] for dataset 'cifar2'"
    ):
        rdata.load_dataset("cifar2", tmp_path, n_train=5)
    with pytest.raises(rdata.DataError, match="names no file"):
        rdata.load_dataset("npz:")
    assert issubclass(rdata.DataError, ValueError)
