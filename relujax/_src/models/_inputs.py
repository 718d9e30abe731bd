"""Input checks of the models, at trace time: a wrong layout gets a message, not an XLA error.

A batch in NCHW (PyTorch's layout), a single image, grayscale or 28x28 images would otherwise
fail deep inside XLA ("lhs feature dimension size divided by feature_group_count ...",
"dot_general requires contracting dimensions to have the same shape ...") or, worse, run on the
wrong axes. Shapes are static under `jit`, so these checks cost nothing at run time.
"""

from __future__ import annotations

import math
from typing import Any


class ModelInputError(ValueError):
    """An input a model cannot take (rank, layout, channels or size); says the fix."""


def check_images(model: str, x: Any, *, channels: int = 3, size: int | None = None) -> None:
    """ModelInputError (a ValueError) unless `x` is an NHWC batch `(N, H, W, channels)`, with
    H = W = `size` when set (models whose first linear layer fixes the image size).

    Example:
      >>> import numpy as np
      >>> try:
      ...     check_images("NetDepth", np.zeros((2, 3, 32, 32)), size=32)
      ... except ValueError as e:
      ...     print(str(e).split("; ")[1])
      relujax models take NHWC: x.transpose(0, 2, 3, 1)
    """
    shape = tuple(getattr(x, "shape", ()))
    hw = f"{size}, {size}" if size else "H, W"
    want = f"{model}: expected images of shape (N, {hw}, {channels}) (NHWC), got {shape}"
    if len(shape) == 3 and shape[-1] == channels:
        raise ModelInputError(f"{want}: one image, not a batch; add the batch axis: x[None]")
    if len(shape) != 4:
        raise ModelInputError(f"{want}; pass a batch of images (N, H, W, C)")
    if shape[-1] != channels:
        if shape[1] == channels:
            raise ModelInputError(f"{want}; relujax models take NHWC: x.transpose(0, 2, 3, 1)")
        fix = "repeat a grayscale channel: x.repeat(3, axis=-1)" if shape[-1] == 1 else ""
        raise ModelInputError(
            f"{want}; the last axis holds the channels" + (f": {fix}" if fix else "")
        )
    if size is not None and shape[1:3] != (size, size):
        raise ModelInputError(
            f"{want}; this model's first linear layer is sized for {size}x{size} images: resize "
            f"or pad them, e.g. jax.image.resize(x, (N, {size}, {size}, {channels}), 'bilinear')"
        )


def check_features(model: str, x: Any, features: int) -> None:
    """ModelInputError (a ValueError) unless the last axis of `x` holds `features` features."""
    shape = tuple(getattr(x, "shape", ()))
    if shape and shape[-1] == features:
        return
    fix = f"the last axis must hold the {features} features"
    if len(shape) > 2 and math.prod(shape[1:]) == features:
        fix = "flatten the images: x.reshape(x.shape[0], -1)"
    raise ModelInputError(f"{model}: expected inputs of shape (N, {features}), got {shape}; {fix}")
