"""`load_dataset`: one entry point for every dataset name."""

from __future__ import annotations

import os
from typing import Any

from relujax._src.data.cifar import load_cifar
from relujax._src.data.dataset import DataError, Dataset, load_npz
from relujax._src.data.download import default_data_dir
from relujax._src.data.mnist import load_mnist
from relujax._src.data.synthetic import make_synthetic

__all__ = ["DATASETS", "load_dataset"]

DATASETS = ("cifar2", "cifar10", "mnist", "synthetic", "npz:PATH")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    **kwargs: Any,
) -> Dataset:
    """Loads a dataset by name into host memory.

    Args:
      name: ``"cifar2"`` (CIFAR-10 airplanes -> 0 and birds -> 1, the book's task),
        ``"cifar10"``, ``"mnist"``, ``"synthetic"`` (built in, needs nothing on disk) or
        ``"npz:PATH"`` (a user's file with ``x_train, y_train, x_test, y_test``; a relative
        PATH is looked up in the working directory, then in the data folder).
      data_dir: the data folder; default ``$RELUJAX_DATA``, else ``~/.cache/relujax``. CIFAR is
        read from ``cifar2.npz`` / ``cifar10.npz``, ``cifar-10-batches-bin/`` or
        ``cifar-10-binary.tar.gz`` there; MNIST from its four official ``*-ubyte.gz`` files.
      download: fetch missing official files (size and md5 checked, written atomically).
      progress: show a progress bar on stderr while downloading.
      **kwargs: for ``"synthetic"``: ``num_classes=2, n_train=10000, n_test=2000,
        image_size=32, seed=0``; for ``"npz:PATH"``: ``num_classes``, ``class_names``.

    Raises:
      DataError: unknown name, data missing (offline: one sentence with the fix), truncated
        or corrupted files, wrong md5, unsafe archives, invalid npz contents.

    Example:
      >>> ds = load_dataset("synthetic", num_classes=10, n_train=200, n_test=50)
      >>> ds.x_train.shape, ds.num_classes, ds.mean.shape
      ((200, 32, 32, 3), 10, (3,))
    """
    if not isinstance(name, str):
        raise TypeError(f"load_dataset: name must be a str, got {type(name).__name__}")
    key = name.strip()
    folder = default_data_dir(data_dir)
    allowed: tuple[str, ...] = ()
    if key.lower() == "synthetic":
        allowed = ("num_classes", "n_train", "n_test", "image_size", "seed")
    elif key.lower().startswith("npz:"):
        allowed = ("num_classes", "class_names")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"load_dataset: unexpected keyword arguments {unknown} for dataset {name!r}"
            + (f" (it accepts {list(allowed)})" if allowed else " (it takes none)")
        )
    if key.lower() == "synthetic":
        return make_synthetic(**kwargs)
    if key.lower() in ("cifar2", "cifar10"):
        return load_cifar(key.lower(), folder, download_ok=download, progress=progress)
    if key.lower() == "mnist":
        return load_mnist(folder, download_ok=download, progress=progress)
    if key.lower().startswith("npz:"):
        path = os.path.expanduser(key[4:])
        if not path:
            raise DataError(f"load_dataset: {name!r} names no file; use npz:PATH")
        if not os.path.isabs(path) and not os.path.exists(path):
            in_folder = os.path.join(folder, path)
            if os.path.exists(in_folder):
                path = in_folder
        return load_npz(path, name=key, **kwargs)
    raise DataError(f"load_dataset: unknown dataset {name!r}; expected one of {list(DATASETS)}")
