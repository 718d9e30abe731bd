"""relujax.data sources: CIFAR binary (archive, folder, npz), MNIST idx, user npz, download."""

import gzip
import hashlib
import io
import os
import pathlib
import tarfile
import urllib.error

import numpy as np
import pytest

from relujax import data as rdata
from relujax._src.data import cifar, download, mnist
from relujax._src.data.download import Resource

N_REC = 12  # records per batch file in the small test archives


def _cifar_images(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), np.uint8), (np.arange(n) + seed) % 10


def _cifar_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    chw = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return np.concatenate([np.asarray(y, np.uint8)[:, None], chw], axis=1).tobytes()


def _batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = [*cifar.TRAIN_FILES, cifar.TEST_FILE]
    return {f: _cifar_images(i, N_REC) for i, f in enumerate(names)}


def _write_tar(path: pathlib.Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)


def _archive_members(batches=None, **overrides: bytes) -> dict[str, bytes]:
    batches = batches or _batches()
    members = {f"{cifar.FOLDER}/batches.meta.txt": b"airplane\n"}
    members.update({f"{cifar.FOLDER}/{f}": _cifar_bytes(*xy) for f, xy in batches.items()})
    members.update(overrides)
    return members


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", N_REC)
    return _batches()


def _expected(batches, which):
    xtr = np.concatenate([batches[f][0] for f in cifar.TRAIN_FILES])
    ytr = np.concatenate([batches[f][1] for f in cifar.TRAIN_FILES])
    xte, yte = batches[cifar.TEST_FILE]
    if which == "cifar2":
        keep_tr, keep_te = np.isin(ytr, (0, 2)), np.isin(yte, (0, 2))
        return xtr[keep_tr], ytr[keep_tr] // 2, xte[keep_te], yte[keep_te] // 2
    return xtr, ytr, xte, yte


def _check(ds, expected, which):
    for got, want in zip((ds.x_train, ds.y_train, ds.x_test, ds.y_test), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert ds.y_train.dtype == np.int32 and ds.x_train.dtype == np.uint8
    assert ds.num_classes == (2 if which == "cifar2" else 10)
    assert ds.class_names[:2] == (
        ("airplane", "bird") if which == "cifar2" else cifar.CIFAR10_CLASSES[:2]
    )
    np.testing.assert_allclose(ds.mean, rdata.CIFAR_MEAN)
    np.testing.assert_allclose(ds.std, rdata.CIFAR_STD)


# ---- the genuine CIFAR-10 test batch ------------------------------------------------------


def test_real_test_batch_equals_cifar2_npz(shared_data):
    raw = (shared_data / "test_batch.bin").read_bytes()
    x, y = cifar.parse_cifar_batch(raw, "test_batch.bin", records=10000)
    keep = np.isin(y, (0, 2))
    with np.load(shared_data / "cifar2.npz") as ref:
        np.testing.assert_array_equal(x[keep], ref["x_test"])
        np.testing.assert_array_equal(y[keep] // 2, ref["y_test"])
    assert x.shape == (10000, 32, 32, 3) and np.bincount(y).tolist() == [1000] * 10


def test_real_cifar2_npz_and_extracted_folder(shared_data, tmp_path):
    ds = rdata.load_dataset("cifar2", shared_data, download=False)
    assert (ds.n_train, ds.n_test, ds.source) == (10000, 2000, str(shared_data / "cifar2.npz"))
    assert np.bincount(ds.y_train).tolist() == [5000, 5000]
    # The folder reader on real bytes (the test batch stands in for the five training ones).
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    for f in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        (folder / f).symlink_to(shared_data / "test_batch.bin")
    ds10 = rdata.load_dataset("cifar10", tmp_path, download=False)
    np.testing.assert_array_equal(ds10.x_test[np.isin(ds10.y_test, (0, 2))], ds.x_test)
    assert ds10.n_train == 50000 and ds10.source == str(folder)


# ---- CIFAR from small archives, folders and npz files -------------------------------------


@pytest.mark.parametrize("which", ["cifar2", "cifar10"])
def test_cifar_from_archive_folder_and_npz(tmp_path, small_batches, which):
    want = _expected(small_batches, which)
    _write_tar(tmp_path / cifar.CIFAR10_RESOURCE.filename, _archive_members(small_batches))
    ds = rdata.load_dataset(which, tmp_path, download=False)
    assert ds.source.endswith(".tar.gz")
    _check(ds, want, which)

    folder = tmp_path / cifar.FOLDER  # the extracted folder wins over the archive
    folder.mkdir()
    for f, xy in small_batches.items():
        (folder / f).write_bytes(_cifar_bytes(*xy))
    ds = rdata.load_dataset(which, tmp_path, download=False)
    assert ds.source == str(folder)
    _check(ds, want, which)

    full = _expected(small_batches, "cifar10")  # cifar10.npz wins over both
    np.savez(
        tmp_path / "cifar10.npz",
        **dict(zip(("x_train", "y_train", "x_test", "y_test"), full, strict=True)),
    )
    ds = rdata.load_dataset(which, tmp_path, download=False)
    assert ds.source.endswith("cifar10.npz")
    _check(ds, want, which)


def test_cifar2_npz_is_preferred_and_validated(tmp_path, small_batches):
    want = _expected(small_batches, "cifar2")
    np.savez(
        tmp_path / "cifar2.npz",
        x_train=want[0],
        y_train=want[1].astype(np.uint8),
        x_test=want[2],
        y_test=want[3],
    )
    ds = rdata.load_dataset("cifar2", tmp_path, download=False)
    assert ds.source.endswith("cifar2.npz")
    _check(ds, want, "cifar2")
    np.savez(
        tmp_path / "cifar2.npz",
        x_train=want[0][:, :16],
        y_train=want[1],
        x_test=want[2][:, :16],
        y_test=want[3],
    )
    with pytest.raises(rdata.DataError, match=r"cifar2\.npz.*\(32, 32, 3\)"):
        rdata.load_dataset("cifar2", tmp_path, download=False)


def _corruptions():
    good = _archive_members
    yield (
        "truncated",
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "truncated or corrupted",
    )
    yield "flipped", lambda p: p.write_bytes(_flip(p.read_bytes())), "truncated or corrupted"
    yield (
        "dotdot",
        lambda p: _write_tar(p, good(**{"cifar-10-batches-bin/../../evil": b"x"})),
        "unsafe member",
    )
    yield "absolute", lambda p: _write_tar(p, good(**{"/tmp/evil": b"x"})), "unsafe member"
    yield (
        "symlink",
        lambda p: _write_tar(
            p,
            {k: v for k, v in good().items() if "batch_1" not in k},
            links=(f"{cifar.FOLDER}/data_batch_1.bin",),
        ),
        "not a regular file",
    )
    yield (
        "short_batch",
        lambda p: _write_tar(p, good(**{f"{cifar.FOLDER}/data_batch_3.bin": b"\0" * 3073 * 3})),
        "data_batch_3.bin.*truncated or not CIFAR-10",
    )
    yield (
        "odd_size",
        lambda p: _write_tar(
            p, good(**{f"{cifar.FOLDER}/test_batch.bin": b"\0" * 3073 * N_REC + b"\0"})
        ),
        "test_batch.bin.*expected 12 records",
    )
    yield (
        "bad_label",
        lambda p: _write_tar(
            p, good(**{f"{cifar.FOLDER}/data_batch_2.bin": b"\xc8" * 3073 * N_REC})
        ),
        "data_batch_2.bin.*label 200",
    )
    yield (
        "missing",
        lambda p: _write_tar(p, {k: v for k, v in good().items() if "test_batch" not in k}),
        "members missing",
    )
    yield "not_gzip", lambda p: p.write_bytes(b"<html>proxy login</html>"), "truncated or corrupted"


def _flip(payload: bytes, at: int | None = None) -> bytes:
    b = bytearray(payload)
    b[len(b) // 2 if at is None else at] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize(
    "name,corrupt,message", list(_corruptions()), ids=[c[0] for c in _corruptions()]
)
def test_corrupted_archive_is_a_clear_error_and_nothing_is_touched(
    tmp_path, small_batches, name, corrupt, message
):
    archive = tmp_path / cifar.CIFAR10_RESOURCE.filename
    _write_tar(archive, _archive_members(small_batches))
    corrupt(archive)
    (tmp_path / "notes.txt").write_text("keep me")
    before = _snapshot(tmp_path)
    with pytest.raises(rdata.DataError, match=message) as err:
        rdata.load_dataset("cifar10", tmp_path, download=True)  # no download: a file is there
    assert str(archive) in str(err.value)
    assert _snapshot(tmp_path) == before


def test_folder_with_a_wrong_size_batch(tmp_path, small_batches):
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    for f, xy in small_batches.items():
        (folder / f).write_bytes(_cifar_bytes(*xy))
    (folder / "data_batch_4.bin").write_bytes(_cifar_bytes(*small_batches["data_batch_4.bin"])[:-7])
    with pytest.raises(rdata.DataError, match=r"data_batch_4\.bin: .* bytes is not a CIFAR-10"):
        rdata.load_dataset("cifar2", tmp_path, download=False)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(rdata.DataError, match=r"data_batch_4\.bin is missing"):
        rdata.load_dataset("cifar2", tmp_path, download=False)


def test_parse_batch_layout():
    x, y = _cifar_images(7, 3)
    got_x, got_y = cifar.parse_cifar_batch(_cifar_bytes(x, y), "mem")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.flags.c_contiguous and got_y.dtype == np.int32
    with pytest.raises(rdata.DataError, match="mem: 0 bytes"):
        cifar.parse_cifar_batch(b"", "mem")


# ---- download -----------------------------------------------------------------------------


def _resource(src: pathlib.Path, filename: str, **kw) -> Resource:
    payload = src.read_bytes()
    fields = dict(
        filename=filename, url=src.as_uri(), size=len(payload), md5=hashlib.md5(payload).hexdigest()
    )
    fields.update(kw)
    return Resource(**fields)


def test_download_atomic_and_verified(tmp_path, capsys):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3_000_000))
    dest = tmp_path / "data"
    path = download.download(_resource(src, "f.bin"), dest)
    assert pathlib.Path(path).read_bytes() == src.read_bytes()
    assert sorted(os.listdir(dest)) == ["f.bin"]
    bar = capsys.readouterr().err.splitlines()  # not a terminal: one line per 10%
    assert bar[0].startswith("Downloading f.bin: [") and "100.0% 3.0/3.0 MB" in bar[-1]

    (dest / "good.bin").write_bytes(b"good")
    before = _snapshot(dest)
    for bad, match in (
        (dict(md5="0" * 32), "has md5 .* expected 0{32}"),
        (dict(size=10), "larger than expected"),
        (dict(size=4_000_000), "smaller than expected"),
    ):
        with pytest.raises(rdata.DataError, match=match):
            download.download(_resource(src, "g.bin", **bad), dest, progress=False)
        assert _snapshot(dest) == before  # no partial file, nothing replaced


def test_download_interrupted_or_offline_leaves_nothing(tmp_path):
    res = Resource("f.bin", "https://example.invalid/f.bin", 10, "0" * 32)

    class Response(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 0:
                raise KeyboardInterrupt
            return super().read(4)

    with pytest.raises(KeyboardInterrupt):
        download.download(res, tmp_path, progress=False, opener=lambda url: Response(b"0123456789"))
    assert os.listdir(tmp_path) == []

    def offline(url):
        raise urllib.error.URLError("Temporary failure in name resolution")

    with pytest.raises(
        rdata.DataError, match=r"could not download .*to work offline, put f\.bin"
    ) as err:
        download.download(res, tmp_path, progress=False, opener=offline)
    assert str(tmp_path) in str(err.value) and os.listdir(tmp_path) == []


def test_load_dataset_downloads_when_absent(tmp_path, small_batches, monkeypatch):
    src = tmp_path / "mirror" / "archive.tar.gz"
    src.parent.mkdir()
    _write_tar(src, _archive_members(small_batches))
    monkeypatch.setattr(cifar, "CIFAR10_RESOURCE", _resource(src, cifar.CIFAR10_RESOURCE.filename))
    monkeypatch.setenv("RELUJAX_DATA", str(tmp_path / "cache"))
    with pytest.raises(
        rdata.DataError,
        match=r"no CIFAR-10 data in .*cache and downloading is off: "
        r"put cifar-10-binary\.tar\.gz .*cifar2\.npz",
    ):
        rdata.load_dataset("cifar2", download=False)
    ds = rdata.load_dataset("cifar2", progress=False)
    assert ds.source == str(tmp_path / "cache" / cifar.CIFAR10_RESOURCE.filename)
    _check(ds, _expected(small_batches, "cifar2"), "cifar2")
    assert os.listdir(tmp_path / "cache") == [cifar.CIFAR10_RESOURCE.filename]

    monkeypatch.setattr(
        cifar,
        "CIFAR10_RESOURCE",
        Resource(cifar.CIFAR10_RESOURCE.filename, (tmp_path / "gone.tgz").as_uri(), 1, "0" * 32),
    )
    with pytest.raises(
        rdata.DataError, match=r"could not download .*put cifar-10-binary\.tar\.gz .* in .*empty"
    ):
        rdata.load_dataset("cifar10", tmp_path / "empty", progress=False)


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
