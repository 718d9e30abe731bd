"""MNIST from the official idx gz files (the seeds' 784 -> 10 MLP)."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from relujax._src.data.dataset import DataError, Dataset, make_dataset
from relujax._src.data.download import Resource, download

__all__ = ["MNIST_RESOURCES", "load_mnist", "parse_idx"]

_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_RESOURCES = {
    "train_images": Resource(
        "train-images-idx3-ubyte.gz", _MIRROR + "train-images-idx3-ubyte.gz",
        9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    "train_labels": Resource(
        "train-labels-idx1-ubyte.gz", _MIRROR + "train-labels-idx1-ubyte.gz",
        28881, "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    "test_images": Resource(
        "t10k-images-idx3-ubyte.gz", _MIRROR + "t10k-images-idx3-ubyte.gz",
        1648877, "9fb629c4189551a2d022fa330f9573f3",
    ),
    "test_labels": Resource(
        "t10k-labels-idx1-ubyte.gz", _MIRROR + "t10k-labels-idx1-ubyte.gz",
        4542, "ec29112dd5afa0611ce80d1b7f02629c",
    ),
}  # fmt: skip
_UBYTE = 0x08


def parse_idx(data: bytes, origin: str, *, ndim: int) -> np.ndarray:
    """Parses an (uncompressed) idx file of unsigned bytes with ``ndim`` dimensions.

    The header is two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions,
    then one big-endian uint32 per dimension; the data must hold exactly their product. Any
    mismatch (a truncated file included) is a `DataError` naming ``origin``.

    Example:
      >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]), "mem", ndim=1).tolist()
      [7, 8, 9]
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{origin}: not an idx file (bad magic number); truncated or corrupted?")
    if data[2] != _UBYTE:
        raise DataError(f"{origin}: idx type code {data[2]:#04x}, expected 0x08 (unsigned byte)")
    if data[3] != ndim:
        raise DataError(f"{origin}: idx file has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{origin}: idx header is truncated ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], ">u4"))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(
            f"{origin}: the header declares shape {shape} ({expected} bytes of data) but the file "
            f"has {len(data) - header}; it is truncated or corrupted"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _read_gz(path: str) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupted gzip file ({e}); delete it") from e


def load_mnist(data_dir: str, *, download_ok: bool = True, progress: bool = True) -> Dataset:
    """Loads MNIST from the four official idx gz files in ``data_dir`` (downloading missing ones).

    Images come as ``uint8`` ``(N, 28, 28, 1)``; mean/std are the training set's.
    """
    paths = {}
    for key, res in MNIST_RESOURCES.items():
        path = os.path.join(data_dir, res.filename)
        if not os.path.exists(path):
            files = ", ".join(r.filename for r in MNIST_RESOURCES.values())
            fix = f"put the four MNIST files ({files}, from {_MIRROR}) in {data_dir}"
            if not download_ok:
                raise DataError(
                    f"mnist: {res.filename} is not in {data_dir} and downloading is off: {fix}, "
                    f"or allow the download"
                )
            path = download(res, data_dir, progress=progress, hint=fix)
        paths[key] = path
    arrays = {}
    for key, path in paths.items():
        arrays[key] = parse_idx(_read_gz(path), path, ndim=3 if key.endswith("images") else 1)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape[1:] != (28, 28):
            raise DataError(f"{paths[f'{split}_images']}: images are {x.shape[1:]}, not 28x28")
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{paths[f'{split}_labels']}: {y.shape[0]} labels for {x.shape[0]} images in "
                f"{paths[f'{split}_images']}"
            )
        if y.size and y.max() > 9:
            raise DataError(f"{paths[f'{split}_labels']}: label {int(y.max())}, MNIST has 0..9")
    return make_dataset(
        "mnist",
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        source=data_dir,
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        image_shape=(28, 28, 1),
    )
