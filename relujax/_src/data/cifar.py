"""CIFAR-10 and CIFAR-2 from the official binary format (archive or folder) or an .npz.

The binary format is 10,000 records per batch file, each 1 label byte followed by 3,072
pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32 row-major). It is read straight
from ``cifar-10-binary.tar.gz`` without extraction, and never unpickled (the python version of
CIFAR is a pickle, unsafe on untrusted files).
"""

from __future__ import annotations

import gzip
import os
import posixpath
import re
import tarfile
import zlib

import numpy as np

from relujax._src.data.dataset import DataError, Dataset, make_dataset, read_npz_arrays
from relujax._src.data.download import Resource, download

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_RESOURCE",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "load_cifar",
    "parse_cifar_batch",
    "read_cifar_archive",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# "Deep Learning with PyTorch", ch. 7: statistics of the 50,000 CIFAR-10 training images (RGB),
# used by the book for CIFAR-2 too.
CIFAR_MEAN = (0.4915, 0.4823, 0.4468)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR2_LABELS = (0, 2)  # airplane -> 0, bird -> 1

CIFAR10_RESOURCE = Resource(
    filename="cifar-10-binary.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    size=170052171,
    md5="c32a1d4ab5d03f1284b67883e8d87530",
)
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 1 + 32 * 32 * 3
_CHUNK = 1 << 20
# Records in each official batch file; a different count means a truncated or foreign file.
RECORDS_PER_BATCH = 10000


def parse_cifar_batch(
    data: bytes, origin: str, *, records: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Parses one CIFAR-10 binary batch into ``(images uint8 (N, 32, 32, 3), labels int32 (N,))``.

    ``records`` is the expected number of records (None: any whole number). A size that is not
    ``records * 3073`` bytes, or a label byte above 9, is a `DataError` naming ``origin``.

    Example:
      >>> import numpy as np
      >>> rec = bytes([2]) + bytes(range(256)) * 12
      >>> x, y = parse_cifar_batch(rec, "mem")
      >>> x.shape, y.tolist(), x[0, 0, 1].tolist()
      ((1, 32, 32, 3), [2], [1, 1, 1])
    """
    n, rest = divmod(len(data), RECORD_BYTES)
    if rest or n == 0 or (records is not None and n != records):
        want = f"{records} records" if records is not None else "a whole number of records"
        raise DataError(
            f"{origin}: {len(data)} bytes is not a CIFAR-10 binary batch (expected {want} of "
            f"{RECORD_BYTES} bytes{f' = {records * RECORD_BYTES} bytes' if records else ''}); "
            f"the file is truncated or not CIFAR-10"
        )
    raw = np.frombuffer(data, np.uint8).reshape(n, RECORD_BYTES)
    labels = raw[:, 0].astype(np.int32)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(
            f"{origin}: record {bad} has label {labels[bad]}, CIFAR-10 labels are 0..9; "
            f"the file is corrupted or not CIFAR-10"
        )
    images = raw[:, 1:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _unsafe(name: str) -> bool:
    """Whether a tar member name is absolute or climbs out of the extraction folder."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[/\\]+", name)


def read_cifar_archive(path: str) -> dict[str, bytes]:
    """Reads the six batch files out of ``cifar-10-binary.tar.gz`` in one streaming pass.

    Nothing is extracted to disk. Any member with an absolute path or a ``..`` component makes
    the whole archive suspect (`DataError`); so do a batch that is not a regular file, a missing
    or duplicated batch, and a truncated or corrupted gzip stream. Returns ``{filename: bytes}``.
    """
    wanted = {f"{FOLDER}/{f}": f for f in (*TRAIN_FILES, TEST_FILE)}
    found: dict[str, bytes] = {}
    try:
        # gzip (unlike tarfile's own "r|gz") checks the CRC-32 of everything it decompressed;
        # reading to the end makes a flipped byte anywhere in the archive an error.
        with gzip.open(path, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                if _unsafe(member.name):
                    raise DataError(
                        f"{path}: refusing an archive with an unsafe member {member.name!r} "
                        f"(absolute path or '..'); download it again from "
                        f"{CIFAR10_RESOURCE.url}"
                    )
                name = posixpath.normpath(member.name)
                if name not in wanted:
                    continue
                if not member.isreg():
                    raise DataError(f"{path}: member {member.name!r} is not a regular file")
                if wanted[name] in found:
                    raise DataError(f"{path}: member {member.name!r} appears twice")
                f = tar.extractfile(member)
                assert f is not None  # a regular file always has data
                found[wanted[name]] = f.read()
            while gz.read(_CHUNK):
                pass
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"{path}: truncated or corrupted archive ({e}); delete it and download it again "
            f"({CIFAR10_RESOURCE.url}, md5 {CIFAR10_RESOURCE.md5})"
        ) from e
    missing = [f"{FOLDER}/{f}" for f in (*TRAIN_FILES, TEST_FILE) if f not in found]
    if missing:
        raise DataError(f"{path}: not the CIFAR-10 binary archive, members missing: {missing}")
    return found


def _read_folder(folder: str) -> dict[str, bytes]:
    out = {}
    for f in (*TRAIN_FILES, TEST_FILE):
        p = os.path.join(folder, f)
        if not os.path.isfile(p):
            raise DataError(f"{folder}: {f} is missing from the extracted CIFAR-10 folder")
        with open(p, "rb") as fh:
            out[f] = fh.read()
    return out


def _from_batches(batches: dict[str, bytes], origin: str) -> tuple[np.ndarray, ...]:
    parsed = {
        f: parse_cifar_batch(batches[f], f"{origin}: {f}", records=RECORDS_PER_BATCH)
        for f in (*TRAIN_FILES, TEST_FILE)
    }
    x_train = np.concatenate([parsed[f][0] for f in TRAIN_FILES])
    y_train = np.concatenate([parsed[f][1] for f in TRAIN_FILES])
    return x_train, y_train, *parsed[TEST_FILE]


def _to_cifar2(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Airplanes (0) and birds (CIFAR label 2 -> 1), in their original order (as the book)."""
    keep = np.isin(y, CIFAR2_LABELS)
    return x[keep], (y[keep] == CIFAR2_LABELS[1]).astype(np.int32)


def _sources(which: str, data_dir: str) -> list[tuple[str, str]]:
    cands = [("npz", "cifar2.npz")] if which == "cifar2" else []
    cands += [("npz", "cifar10.npz"), ("folder", FOLDER), ("archive", CIFAR10_RESOURCE.filename)]
    return [(kind, os.path.join(data_dir, f)) for kind, f in cands]


def load_cifar(
    which: str,
    data_dir: str,
    *,
    download_ok: bool = True,
    progress: bool = True,
) -> Dataset:
    """Loads ``"cifar10"`` or ``"cifar2"`` from ``data_dir`` (downloading when allowed).

    Looks, in order, for ``cifar2.npz`` (CIFAR-2 only), ``cifar10.npz``, the extracted
    ``cifar-10-batches-bin/`` and ``cifar-10-binary.tar.gz``; the first one present is used and
    a problem with it is an error (no silent fallback to another copy). With none present, the
    official archive is downloaded (size and md5 checked) when ``download_ok``.
    """
    if which not in ("cifar2", "cifar10"):
        raise ValueError(f"load_cifar: which must be 'cifar2' or 'cifar10', got {which!r}")
    names = CIFAR10_CLASSES if which == "cifar10" else ("airplane", "bird")
    present = [(k, p) for k, p in _sources(which, data_dir) if os.path.exists(p)]
    if present:
        kind, source = present[0]
    else:
        fix = (
            f"put {CIFAR10_RESOURCE.filename} (from {CIFAR10_RESOURCE.url}), its extracted "
            f"{FOLDER}/, or {'cifar2.npz / ' if which == 'cifar2' else ''}cifar10.npz in "
            f"{data_dir}"
        )
        if not download_ok:
            raise DataError(
                f"{which}: no CIFAR-10 data in {data_dir} and downloading is off: {fix}, or "
                f"allow the download"
            )
        kind, source = "archive", download(CIFAR10_RESOURCE, data_dir, progress=progress, hint=fix)
    if kind == "npz":
        arrays = read_npz_arrays(source)
        xtr, ytr, xte, yte = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        if which == "cifar2" and os.path.basename(source) == "cifar10.npz":
            for y, what in ((ytr, "y_train"), (yte, "y_test")):
                if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                    raise DataError(f"{source}: {what} must be integer labels of shape (N,)")
            xtr, ytr = _to_cifar2(xtr, ytr)
            xte, yte = _to_cifar2(xte, yte)
    else:
        batches = _read_folder(source) if kind == "folder" else read_cifar_archive(source)
        xtr, ytr, xte, yte = _from_batches(batches, source)
        if which == "cifar2":
            xtr, ytr = _to_cifar2(xtr, ytr)
            xte, yte = _to_cifar2(xte, yte)
    return make_dataset(
        which,
        xtr,
        ytr,
        xte,
        yte,
        source=source,
        num_classes=len(names),
        class_names=names,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        image_shape=(32, 32, 3),
    )
