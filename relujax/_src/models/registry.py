"""Name -> model constructor, for command lines and configs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx

from relujax._src.models import book, resblock, resnet_cifar, resnet_imagenet
from relujax._src.models.monitor import ActivationLike

MODELS: dict[str, Callable[..., nnx.Module]] = {
    "simplenn": book.SimpleNN,
    "mlp": book.MLP,
    "net": book.Net,
    "netwidth": book.NetWidth,
    "netdropout": book.NetDropout,
    "netbatchnorm": book.NetBatchNorm,
    "netdepth": book.NetDepth,
    "netres": book.NetRes,
    "netresdeep": resblock.NetResDeep,
    "resnet20": resnet_cifar.resnet20,
    "resnet32": resnet_cifar.resnet32,
    "resnet44": resnet_cifar.resnet44,
    "resnet56": resnet_cifar.resnet56,
    "resnet110": resnet_cifar.resnet110,
    "resnet18": resnet_imagenet.resnet18,
    "resnet34": resnet_imagenet.resnet34,
    "resnet50": resnet_imagenet.resnet50,
}

# The keyword that sets the number of output classes, per model ("simplenn"/"mlp" call it
# out_features, as their PyTorch originals).
_CLASSES_ARG = {"simplenn": "out_features", "mlp": "out_features"}


def create_model(
    name: str,
    *,
    rngs: nnx.Rngs,
    num_classes: int | None = None,
    activation: ActivationLike = None,
    **kwargs: Any,
) -> nnx.Module:
    """Builds the model registered as ``name`` (see ``MODELS``), e.g. ``"netresdeep"``.

    ``num_classes`` (None: the model's default) and ``activation`` (None: the model's default; a
    name such as ``"prelu"``, a module class, a module instance or a function) are forwarded with
    the remaining ``kwargs`` (``dtype``, ``n_blocks``, ``shared_blocks``, ...).

    Example:
      >>> from flax import nnx
      >>> from relujax.models import create_model
      >>> model = create_model("netresdeep", n_blocks=2, activation="leaky_relu", rngs=nnx.Rngs(0))
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(
            f"create_model: unknown model name {name!r}; expected one of {sorted(MODELS)}."
        )
    if num_classes is not None:
        kwargs[_CLASSES_ARG.get(key, "num_classes")] = num_classes
    return MODELS[key](activation=activation, rngs=rngs, **kwargs)
