"""relujax.data sources: CIFAR-10/2 (binary archive, folder, npz) and the atomic downloader."""

import hashlib
import io
import os
import pathlib
import tarfile
import urllib.error

import numpy as np
import pytest

from relujax import data as rdata
from relujax._src.data import cifar, download
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
