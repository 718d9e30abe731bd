"""The in-memory `Dataset`, its validation, and the `npz:PATH` reader."""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "channel_stats",
    "load_npz",
    "make_dataset",
    "read_npz_arrays",
]


class DataError(ValueError):
    """Every data problem: missing file offline, corrupted file, wrong md5, unsafe archive, bad npz.

    The message names the file (or dataset) and the problem, and says how to fix it. The
    training CLI turns it into exit code 2.
    """


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification dataset held on the host as NumPy arrays.

    Attributes:
      name: the dataset's name (``"cifar2"``, ``"cifar10"``, ``"mnist"``, ``"synthetic"``, ...).
      x_train, x_test: images, NHWC (grayscale as ``(N, H, W, 1)``), ``uint8`` (0..255) or
        ``float32`` (taken as already in [0, 1]-pixel units).
      y_train, y_test: ``int32`` labels in ``[0, num_classes)``.
      num_classes: the number of classes.
      class_names: one name per class.
      mean, std: ``float32`` ``(C,)`` per-channel statistics in [0, 1]-pixel units, used by
        `get_batch` to normalise (the book's constants for CIFAR, training-set ones otherwise).
      source: where the data was read from (a path, or a description of a generated set).

    Example:
      >>> from relujax.data import load_dataset
      >>> ds = load_dataset("synthetic", n_train=64, n_test=32)
      >>> ds.x_train.shape, ds.y_train.dtype, ds.num_classes
      ((64, 32, 32, 3), dtype('int32'), 2)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.dtype}{list(self.x_train.shape)}, "
            f"x_test={self.x_test.dtype}{list(self.x_test.shape)}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )


def channel_stats(images: np.ndarray, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of NHWC images, in [0, 1]-pixel units.

    ``uint8`` images are divided by 255; float images are used as they are. Accumulates in
    float64 over chunks, so a 50,000-image set needs no float64 copy of itself.

    Example:
      >>> import numpy as np
      >>> mean, std = channel_stats(np.full((2, 4, 4, 3), 255, np.uint8))
      >>> mean.tolist(), std.tolist()
      ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats: expected NHWC images with N >= 1, got {images.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    c = images.shape[-1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].reshape(-1, c).astype(np.float64) / scale
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = images.size // c
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _images(x: np.ndarray, what: str, origin: str) -> np.ndarray:
    """Checks one image array; returns it NHWC as uint8 or float32."""
    if x.ndim == 3:
        x = x[..., None]  # NHW grayscale
    if x.ndim != 4:
        raise DataError(
            f"{origin}: {what} must be images NHWC (or NHW for grayscale), got shape {x.shape}"
        )
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DataError(f"{origin}: {what} is empty (shape {x.shape})")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{origin}: {what} contains NaN or infinite pixels")
        return np.ascontiguousarray(x)
    raise DataError(
        f"{origin}: {what} must have dtype uint8 (0..255) or float (0..1), got {x.dtype}"
    )


def _labels(y: np.ndarray, what: str, origin: str) -> np.ndarray:
    """Checks one label array; returns it as int32 of shape (N,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{origin}: {what} must be integer labels of shape (N,), got {y.shape}")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{origin}: {what} must have an integer dtype, got {y.dtype}")
    if y.size and int(y.min()) < 0:
        raise DataError(
            f"{origin}: {what} has a negative label ({int(y.min())}); labels start at 0"
        )
    if y.size and int(y.max()) > np.iinfo(np.int32).max:
        raise DataError(f"{origin}: {what} has a label too large for int32 ({int(y.max())})")
    return y.astype(np.int32)


def make_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    source: str,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> Dataset:
    """Validates arrays and builds a `Dataset`; every problem is a `DataError` naming ``source``.

    ``num_classes`` defaults to ``len(class_names)`` or the largest label + 1; ``mean``/``std``
    default to the training set's per-channel statistics; ``image_shape`` (H, W, C), when
    given, is required of every image.

    Example:
      >>> import numpy as np
      >>> x = np.zeros((4, 8, 8), np.uint8)
      >>> make_dataset("toy", x, np.arange(4) % 2, x, np.zeros(4, int), source="mem").x_train.shape
      (4, 8, 8, 1)
    """
    x_train = _images(np.asarray(x_train), "x_train", source)
    x_test = _images(np.asarray(x_test), "x_test", source)
    y_train = _labels(np.asarray(y_train), "y_train", source)
    y_test = _labels(np.asarray(y_test), "y_test", source)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{source}: x_{split} has {x.shape[0]} images but y_{split} has {y.shape[0]} labels"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{source}: train and test images differ in shape: x_train {x_train.shape[1:]}, "
            f"x_test {x_test.shape[1:]}"
        )
    if x_train.dtype != x_test.dtype:
        raise DataError(
            f"{source}: x_train is {x_train.dtype} but x_test is {x_test.dtype}; use one dtype"
        )
    if image_shape is not None and x_train.shape[1:] != tuple(image_shape):
        raise DataError(
            f"{source}: expected images of shape {tuple(image_shape)} (H, W, C), "
            f"got {x_train.shape[1:]}"
        )
    largest = int(max(y_train.max(), y_test.max()))
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes is None:
            num_classes = len(class_names)
        if len(class_names) != num_classes:
            raise DataError(f"{source}: {len(class_names)} class names for {num_classes} classes")
    if num_classes is None:
        num_classes = largest + 1
    if largest >= num_classes:
        raise DataError(f"{source}: labels must be in [0, {num_classes}), found label {largest}")
    if num_classes < 2:
        raise DataError(
            f"{source}: a classification set needs at least 2 classes, got labels "
            f"only in [0, {num_classes})"
        )
    if class_names is None:
        class_names = tuple(str(i) for i in range(num_classes))
    if mean is None or std is None:
        mean_c, std_c = channel_stats(x_train)
        mean = mean_c if mean is None else mean
        std = std_c if std is None else std
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    c = x_train.shape[-1]
    if mean.shape != (c,) or std.shape != (c,):
        raise DataError(f"{source}: mean/std must have shape ({c},), got {mean.shape}/{std.shape}")
    # A constant channel has std 0; dividing by it would give inf/NaN inputs.
    std = np.where(std > 0, std, np.float32(1.0)).astype(np.float32)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=int(num_classes),
        class_names=tuple(class_names),
        mean=mean,
        std=std,
        source=source,
    )


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads an .npz without ever unpickling; returns its arrays or raises `DataError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a valid .npz file, truncated or corrupted ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive of named arrays")
    try:
        missing = [k for k in _NPZ_KEYS if k not in npz.files]
        if missing:
            raise DataError(
                f"{path}: missing arrays {missing}; an npz dataset needs "
                f"{list(_NPZ_KEYS)} (found {sorted(npz.files)})"
            )
        wanted = [*_NPZ_KEYS, *(["class_names"] if "class_names" in npz.files else [])]
        out = {}
        for k in wanted:
            try:
                out[k] = npz[k]
            except ValueError as e:  # object arrays need pickle, which we refuse
                raise DataError(f"{path}: array {k!r} is unreadable without pickle ({e})") from e
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
                raise DataError(f"{path}: array {k!r} is truncated or corrupted ({e})") from e
        return out
    finally:
        npz.close()


def load_npz(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> Dataset:
    """Loads a user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (never unpickling).

    Images NHWC (or NHW for grayscale), ``uint8`` or float; labels integers from 0. An optional
    ``class_names`` array of strings names the classes. Keys, shapes, dtypes, label range and
    lengths are all checked; each problem is a `DataError` naming the file.

    Example:
      >>> import numpy as np, tempfile, os
      >>> f = os.path.join(tempfile.mkdtemp(), "toy.npz")
      >>> x = np.zeros((4, 8, 8, 3), np.uint8)
      >>> np.savez(f, x_train=x, y_train=[0, 1, 0, 1], x_test=x, y_test=[1, 0, 1, 0])
      >>> load_npz(f).num_classes
      2
    """
    arrays = read_npz_arrays(path)
    if class_names is None and "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: class_names must be a 1-D array of strings")
        class_names = [str(n) for n in names.tolist()]
    return make_dataset(
        name or f"npz:{os.fspath(path)}",
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        source=os.fspath(path),
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
        image_shape=image_shape,
    )
