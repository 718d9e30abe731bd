"""The on-device input pipeline: epoch order, batch gathering, augmentation, normalisation.

The whole dataset lives on the device (CIFAR-10 is 150 MB of uint8); an epoch is a matrix of
indices, and each batch is gathered, augmented and normalised inside the jitted step, so the
host never touches pixels during training.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Sharding
from jax.typing import ArrayLike, DTypeLike

from relujax._src.data.dataset import Dataset
from relujax._src.data.sharding import put

__all__ = [
    "augment",
    "epoch_indices",
    "get_batch",
    "normalize",
    "put_on_device",
]


def _check_int(fn: str, arg: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {arg} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{fn}: {arg} must be >= {low}, got {value}")
    return int(value)


def epoch_indices(
    n: int,
    batch_size: int,
    *,
    seed: int | jax.Array,
    epoch: int | jax.Array,
    shuffle: bool = True,
    drop_last: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The batches of one epoch as an ``int32`` index matrix and a ``bool`` mask of real rows.

    With ``shuffle`` the order is ``jax.random.permutation`` keyed by
    ``fold_in(key(seed), epoch)``: a function of (seed, epoch) only, so a resumed run sees
    exactly the batches of an uninterrupted one. ``shuffle=False`` gives ``0..n-1`` in order
    (the book's later runs). With ``drop_last=False`` the last partial batch is kept (the
    book's loader keeps it) and padded with valid indices taken from the epoch's start, its
    padding rows marked False in ``mask``; every batch has the same shape, so nothing
    recompiles. Evaluation that must count every image exactly once uses
    ``epoch_indices(n_test, bs, seed=0, epoch=0, shuffle=False)`` with the mask.

    Returns:
      ``(idx, mask)``, both of shape ``(num_batches, batch_size)``: ``ceil(n / batch_size)``
      batches, or ``n // batch_size`` with ``drop_last``.

    Example:
      >>> idx, mask = epoch_indices(5, 2, seed=0, epoch=0, shuffle=False)
      >>> idx.tolist(), mask.tolist()
      ([[0, 1], [2, 3], [4, 0]], [[True, True], [True, True], [True, False]])
    """
    n = _check_int("epoch_indices", "n", n, 1)
    batch_size = _check_int("epoch_indices", "batch_size", batch_size, 1)
    if drop_last:
        num_batches = n // batch_size
        if num_batches == 0:
            raise ValueError(
                f"epoch_indices: drop_last=True with n={n} < batch_size={batch_size} leaves no "
                f"batch; use drop_last=False or a smaller batch_size"
            )
    else:
        num_batches = -(-n // batch_size)
    if shuffle:
        key = jax.random.fold_in(jax.random.key(seed), epoch)
        order = jax.random.permutation(key, n).astype(jnp.int32)
    else:
        order = jnp.arange(n, dtype=jnp.int32)
    rows = jnp.arange(num_batches * batch_size, dtype=jnp.int32)
    idx = order[rows % n]  # wraps around: padding rows repeat the epoch's first indices
    mask = rows < n
    return idx.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def augment(key: ArrayLike, images: ArrayLike, *, pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop after zero padding, and random horizontal flip, one draw per image.

    Each image is padded with ``pad`` zero pixels on every side and a window of its original
    size is cut at a uniformly random offset (``(2 * pad + 1)**2`` choices); then, with
    probability 1/2, it is mirrored left-right. `get_batch` applies this to the raw pixels,
    before normalisation, so the padding is black (pixel value 0), as torchvision's
    ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` before ``Normalize`` in the
    standard CIFAR ResNet recipe (He et al. 2015). Jittable; shape and dtype are kept; the
    result is a function of ``key`` only.

    Args:
      key: a `jax.random` key.
      images: ``(N, H, W, C)`` images of any dtype.
      pad: pixels of zero padding per side (0 disables the crop).
      flip: whether to flip at random.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
      >>> augment(jax.random.key(0), x).shape
      (2, 8, 8, 3)
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"augment: expected images (N, H, W, C), got shape {images.shape}")
    pad = _check_int("augment", "pad", pad, 0)
    n, h, w, _ = images.shape
    if not pad and not flip:
        return images
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1, dtype=jnp.int32)
    cols = jnp.arange(w, dtype=jnp.int32)[None, :]
    if flip:
        # int32 draws: the same crops and flips with or without jax_enable_x64.
        mirror = jax.random.randint(flip_key, (n,), 0, 2, dtype=jnp.int32) == 1
        cols = jnp.where(mirror[:, None], w - 1 - cols, cols)
    rows = offsets[:, 0, None] + jnp.arange(h, dtype=jnp.int32)[None, :]
    cols = offsets[:, 1, None] + cols
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # Crop and flip as ONE gather: output[i, r, c] = padded[i, rows[i, r], cols[i, c]]. (A
    # flip by `where(mirror, out[:, :, ::-1], out)` after a vmapped dynamic_slice made XLA:CPU
    # recompute the gather per element, several times slower inside a scan.)
    return padded[jnp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


@functools.partial(jax.jit, static_argnames=("dtype",))
def normalize(
    images: ArrayLike, mean: ArrayLike, std: ArrayLike, *, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """``(images / 255 - mean) / std`` for ``uint8`` images (float images skip the ``/ 255``).

    Computed in float32 (float64 when ``dtype`` is float64), then cast to ``dtype``; ``mean``
    and ``std`` are per-channel ``(C,)`` in [0, 1]-pixel units.

    Example:
      >>> import jax.numpy as jnp
      >>> normalize(jnp.zeros((1, 1, 1, 2), jnp.uint8), [0.5, 0.25], [0.25, 0.5]).tolist()
      [[[[-2.0, -0.5]]]]
    """
    images = jnp.asarray(images)
    compute = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    mean = jnp.asarray(mean, compute)
    std = jnp.asarray(std, compute)
    c = images.shape[-1] if images.ndim else None
    if mean.shape != (c,) or std.shape != (c,):
        raise ValueError(
            f"normalize: mean and std must have shape ({c},) (one per channel of images "
            f"{images.shape}), got {mean.shape} and {std.shape}"
        )
    mean = mean.reshape((1,) * (images.ndim - 1) + (c,))  # explicit: no rank promotion
    std = std.reshape(mean.shape)
    x = images.astype(compute)
    if images.dtype == jnp.uint8:
        x = x / compute(255)
    elif not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"normalize: images must be uint8 (0..255) or float (0..1), got {images.dtype}"
        )
    return ((x - mean) / std).astype(dtype)


@functools.partial(jax.jit, static_argnames=("dtype", "sharding"))
def get_batch(
    x: ArrayLike,
    y: ArrayLike,
    idx_row: ArrayLike,
    *,
    mean: ArrayLike,
    std: ArrayLike,
    dtype: DTypeLike = jnp.float32,
    augment_key: ArrayLike | None = None,
    sharding: Sharding | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Gathers one batch on device: rows ``idx_row`` of ``x`` and ``y``, augmented, normalised.

    ``x`` and ``y`` are the whole split as device arrays (`put_on_device`; uint8 images stay
    uint8 on device, 1 byte per pixel). The rows are gathered, augmented with `augment` when
    ``augment_key`` is given (on the raw pixels: the crop pads with black), normalised with
    `normalize` and cast to ``dtype``. ``sharding`` (e.g. `batch_sharding`) constrains the
    batch's layout, splitting it over the ``data`` mesh axis. Jittable (``dtype`` and
    ``sharding`` static).

    Returns:
      ``(images (B, H, W, C) dtype, labels (B,) int32)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relujax.data import load_dataset, epoch_indices, put_on_device
      >>> ds = load_dataset("synthetic", n_train=100, n_test=10)
      >>> x, y, _, _ = put_on_device(ds)
      >>> idx, mask = epoch_indices(ds.n_train, 32, seed=0, epoch=0)
      >>> step = jax.jit(lambda i, k: get_batch(x, y, i, mean=ds.mean, std=ds.std, augment_key=k))
      >>> xb, yb = step(idx[0], jax.random.key(1))
      >>> xb.shape, xb.dtype, yb.dtype
      ((32, 32, 32, 3), dtype('float32'), dtype('int32'))
    """
    x, y, idx_row = jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx_row)
    if x.ndim != 4:
        raise ValueError(f"get_batch: x must be images (N, H, W, C), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"get_batch: y must be labels of shape ({x.shape[0]},), got {y.shape}")
    if idx_row.ndim != 1 or not jnp.issubdtype(idx_row.dtype, jnp.integer):
        raise ValueError(
            f"get_batch: idx_row must be a 1-D integer array (one row of epoch_indices), got "
            f"{idx_row.dtype}{list(idx_row.shape)}"
        )
    if sharding is not None:
        idx_row = jax.lax.with_sharding_constraint(idx_row, sharding)
    xb = jnp.take(x, idx_row, axis=0, mode="clip")
    yb = jnp.take(y, idx_row, axis=0, mode="clip").astype(jnp.int32)
    if augment_key is not None:
        xb = augment(augment_key, xb)
    xb = normalize(xb, mean, std, dtype=dtype)
    if sharding is not None:
        xb = jax.lax.with_sharding_constraint(xb, sharding)
        yb = jax.lax.with_sharding_constraint(yb, sharding)
    return xb, yb


def put_on_device(
    ds: Dataset, sharding: Sharding | None = None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(x_train, y_train, x_test, y_test)`` as device arrays (images keep their dtype).

    ``sharding`` places every array (e.g. `replicated_sharding(mesh)` to keep a full copy on
    each device of a multi-device mesh, on every process); default: the default device.

    Example:
      >>> from relujax.data import load_dataset
      >>> x, y, xt, yt = put_on_device(load_dataset("synthetic", n_train=8, n_test=4))
      >>> x.dtype, y.dtype, xt.shape
      (dtype('uint8'), dtype('int32'), (4, 32, 32, 3))
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"put_on_device: expected a relujax.data.Dataset, got {type(ds).__name__}")
    arrays = (ds.x_train, ds.y_train.astype(np.int32), ds.x_test, ds.y_test.astype(np.int32))
    return put(arrays, sharding)
