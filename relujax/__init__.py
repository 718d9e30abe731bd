"""relujax: the ReLU family of activations for JAX, with exactly specified derivatives.

Every activation is a pure function with a `jax.custom_jvp` rule: the derivative at each kink
is chosen by `subgradient=`, derivatives are never NaN for finite inputs, bf16/f16 stay
bf16/f16, and the backward pass keeps at most one byte per element for the piecewise-linear
functions (a mask) and `x.dtype.itemsize` bytes for the smooth ones.

Example:
  >>> import jax.numpy as jnp, relujax
  >>> relujax.relu(jnp.array([-1.0, 2.0]))
  Array([0., 2.], dtype=float32)
  >>> sorted(relujax.ACTIVATIONS)[:3]
  ['celu', 'elu', 'gelu']
"""

from relujax._src.activations import ACTIVATIONS as ACTIVATIONS
from relujax._src.activations import ActivationSpec as ActivationSpec
from relujax._src.activations import celu as celu
from relujax._src.activations import elu as elu
from relujax._src.activations import gelu as gelu
from relujax._src.activations import leaky_relu as leaky_relu
from relujax._src.activations import prelu as prelu
from relujax._src.activations import relu as relu
from relujax._src.activations import relu6 as relu6
from relujax._src.activations import rrelu as rrelu
from relujax._src.activations import selu as selu
from relujax._src.activations import silu as silu
from relujax._src.activations import softplus as softplus
from relujax._src.version import version as _version

__version__: str = _version()

__all__ = [
    "ACTIVATIONS",
    "ActivationSpec",
    "celu",
    "elu",
    "gelu",
    "leaky_relu",
    "prelu",
    "relu",
    "relu6",
    "rrelu",
    "selu",
    "silu",
    "softplus",
]
