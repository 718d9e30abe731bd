"""Flax NNX activation modules: the functional activations of :mod:`relujax` as layers."""

from relujax._src.extras import require as _require

_require("relujax.nn", "nn", "flax")

from relujax._src.nn.activations import CELU as CELU
from relujax._src.nn.activations import ELU as ELU
from relujax._src.nn.activations import GELU as GELU
from relujax._src.nn.activations import SELU as SELU
from relujax._src.nn.activations import LeakyReLU as LeakyReLU
from relujax._src.nn.activations import PReLU as PReLU
from relujax._src.nn.activations import ReLU as ReLU
from relujax._src.nn.activations import ReLU6 as ReLU6
from relujax._src.nn.activations import RReLU as RReLU
from relujax._src.nn.activations import SiLU as SiLU
from relujax._src.nn.activations import Softplus as Softplus
from relujax._src.nn.registry import ACTIVATION_MODULES as ACTIVATION_MODULES
from relujax._src.nn.registry import make_activation as make_activation

__all__ = [
    "ACTIVATION_MODULES",
    "CELU",
    "ELU",
    "GELU",
    "LeakyReLU",
    "PReLU",
    "ReLU",
    "ReLU6",
    "RReLU",
    "SELU",
    "SiLU",
    "Softplus",
    "make_activation",
]
