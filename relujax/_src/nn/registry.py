"""Name -> activation module class, read from `relujax.ACTIVATIONS`, for command lines and configs.

Each registry entry names its module class (`ActivationSpec.module`); this table is built from
those names, so the functions, the modules and the models' ``activation="name"`` share one list.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Mapping
from typing import Any

from flax import nnx

from relujax._src.activations.registry import ACTIVATIONS
from relujax._src.nn import activations as _a

ACTIVATION_MODULES: Mapping[str, type[nnx.Module]] = types.MappingProxyType(
    {name: getattr(_a, spec.module) for name, spec in ACTIVATIONS.items()}
)


def accepts_rngs(cls: type) -> bool:
    """Whether ``cls(...)`` takes an ``rngs`` keyword (PReLU, RReLU)."""
    return "rngs" in inspect.signature(cls.__init__).parameters


def make_activation(name: str, *, rngs: nnx.Rngs | None = None, **kwargs: Any) -> nnx.Module:
    """Builds the activation module registered under ``name`` (``"relu"``, ``"prelu"``, ...).

    ``rngs`` goes to the modules that take it (``RReLU`` needs it in training mode); ``kwargs`` are
    the class's constructor arguments.

    Example:
      >>> from flax import nnx
      >>> from relujax.nn import make_activation
      >>> type(make_activation("leaky_relu", negative_slope=0.2)).__name__
      'LeakyReLU'
      >>> act = make_activation("rrelu", rngs=nnx.Rngs(0))
    """
    if not isinstance(name, str) or name.lower() not in ACTIVATION_MODULES:
        raise ValueError(
            f"make_activation: unknown activation name {name!r}; expected one of "
            f"{sorted(ACTIVATION_MODULES)}."
        )
    cls = ACTIVATION_MODULES[name.lower()]
    if accepts_rngs(cls):
        kwargs["rngs"] = rngs
    return cls(**kwargs)
