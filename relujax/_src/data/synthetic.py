"""A built-in, deterministic, learnable image classification set that needs nothing on disk."""

from __future__ import annotations

import numpy as np

from relujax._src.data.dataset import Dataset, make_dataset

__all__ = ["make_synthetic"]

# Per-pixel scales in [0, 1]-pixel units, tuned so that with 2 classes the best single pixel
# classifies about 58% of test images (chance 50%) while logistic regression on all pixels
# reaches about 95% after one epoch: the class signal is spread over the whole image.
_SIGNAL = 0.04  # amplitude of the (unit-RMS) class pattern
_CLUTTER = 0.15  # smooth class-independent background
_NOISE = 0.15  # white pixel noise
_BRIGHTNESS = 0.05  # per-image, per-channel offset
_BANK = 16  # smooth patterns the background is mixed from


def _waves(rng: np.random.Generator, n: int, size: int, k: int) -> np.ndarray:
    """``n`` smooth colour patterns (sums of ``k`` plane waves of 0.5-3 cycles), unit RMS."""
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    out = np.zeros((n, size, size, 3))
    for i in range(n):
        for _ in range(k):
            freq = rng.uniform(0.5, 3.0) * 2 * np.pi / size
            theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            colour = rng.normal(size=3)
            wave = np.cos(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
            out[i] += wave[..., None] * colour
        out[i] /= np.sqrt(np.mean(out[i] ** 2))
    return out.astype(np.float32)


def _split(
    rng: np.random.Generator, n: int, protos: np.ndarray, bank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    num_classes, size = protos.shape[0], protos.shape[1]
    y = rng.permutation(np.arange(n) % num_classes)  # balanced classes, random order
    shift = max(1, size * 5 // 32)
    dy, dx = rng.integers(-shift, shift + 1, (2, n))
    rows = (np.arange(size)[None, :] - dy[:, None]) % size
    cols = (np.arange(size)[None, :] - dx[:, None]) % size
    # Each image shows its class pattern, circularly shifted, with a random contrast.
    x = protos[y[:, None, None], rows[:, :, None], cols[:, None, :]]
    x *= (_SIGNAL * rng.uniform(0.6, 1.4, n)).astype(np.float32)[:, None, None, None]
    weights = rng.standard_normal((n, bank.shape[0]), np.float32)
    weights *= np.float32(_CLUTTER / np.sqrt(bank.shape[0]))
    # Elementwise accumulation instead of a BLAS matmul: the same bytes on every CPU.
    for j in range(bank.shape[0]):
        x += weights[:, j, None, None, None] * bank[j]
    x += np.float32(_BRIGHTNESS) * rng.standard_normal((n, 1, 1, 3), np.float32)
    x += np.float32(_NOISE) * rng.standard_normal(x.shape, np.float32)
    x += np.float32(0.5)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), y.astype(np.int32)


def make_synthetic(
    *,
    num_classes: int = 2,
    n_train: int = 10000,
    n_test: int = 2000,
    image_size: int = 32,
    seed: int = 0,
) -> Dataset:
    """A deterministic, learnable image classification set (``uint8`` NHWC, 3 channels).

    Each class is a smooth random colour pattern (a sum of plane waves, fixed by ``seed``); an
    image is its class pattern at low contrast, circularly shifted by up to 5 pixels (at 32x32),
    over smooth random clutter, with a per-image brightness offset and strong pixel noise. The
    class is readable only from many pixels together (the best single pixel is near chance)
    but a linear model or small convnet learns it within an epoch or two; translation makes
    convolutions pay off. The same arguments give the same bytes (for a given NumPy: no BLAS
    is involved); train and test images are independent draws; classes are balanced.

    Example:
      >>> ds = make_synthetic(num_classes=3, n_train=30, n_test=9, image_size=16, seed=1)
      >>> ds.x_train.shape, ds.x_train.dtype, sorted(set(ds.y_test.tolist()))
      ((30, 16, 16, 3), dtype('uint8'), [0, 1, 2])
    """
    for arg, value, low in (
        ("num_classes", num_classes, 2),
        ("n_train", n_train, 1),
        ("n_test", n_test, 1),
        ("image_size", image_size, 4),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"make_synthetic: {arg} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"make_synthetic: {arg} must be >= {low}, got {value}")
    proto_rng = np.random.default_rng([seed, 0])
    protos = _waves(proto_rng, num_classes, image_size, 6)
    bank = _waves(proto_rng, _BANK, image_size, 3)
    x_train, y_train = _split(np.random.default_rng([seed, 1]), n_train, protos, bank)
    x_test, y_test = _split(np.random.default_rng([seed, 2]), n_test, protos, bank)
    return make_dataset(
        "synthetic",
        x_train,
        y_train,
        x_test,
        y_test,
        source=(
            f"synthetic(num_classes={num_classes}, n_train={n_train}, n_test={n_test}, "
            f"image_size={image_size}, seed={seed})"
        ),
        num_classes=num_classes,
        class_names=tuple(f"pattern_{i}" for i in range(num_classes)),
    )
