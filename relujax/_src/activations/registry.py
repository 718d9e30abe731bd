"""The registry of activations: one entry per function, everything a test or benchmark needs.

`ACTIVATIONS[name]` is an `ActivationSpec`. Tests parametrize every property over it,
`relujax.nn.ACTIVATION_MODULES` and the models' ``activation="name"`` are read from it, and the
benchmarks iterate over it, so a new activation added here (with its module class in
``relujax/_src/nn/activations.py``) gets every check, a name and a benchmark row.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from relujax._src.activations import exponential, piecewise, reference, smooth


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    """Everything known about one activation.

    Attributes:
      name: lowercase function name, also the key in `ACTIVATIONS`.
      fn: the relujax function, called as `fn(x, **default_kwargs)`.
      kinks: x locations where the derivative is a convention, at `default_kwargs` (and at
        every `variants` entry, which are chosen not to move them). For the smooth-but-not-C2
        functions (elu, celu, selu at 0; softplus at its threshold) the kink is where a
        derivative jumps.
      piecewise_linear: True for the functions whose backward pass needs only a mask
        (they take `subgradient=`).
      reference: float64 NumPy `reference(x, **kwargs) -> (y, dy, d2y)`.
      jax_nn: the `jax.nn` counterpart, callable as `jax_nn(x, **default_kwargs)`, or None.
      torch_name: name of the `torch.nn.functional` counterpart, or None.
      module: name of the `relujax.nn` module class (a name, so that the functions need no Flax).
      default_kwargs: keyword arguments for a plain call (the required `alpha` of prelu is
        PyTorch's init, 0.25).
      params: names of the hyperparameters that are differentiable (learnable).
      variants: further keyword sets to test beyond the defaults.
      module_args: keywords that the module's constructor names differently from the function
        (prelu's ``alpha`` is ``PReLU(init=...)``, as PyTorch).
    """

    name: str
    fn: Callable[..., jax.Array]
    kinks: tuple[float, ...]
    piecewise_linear: bool
    reference: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
    jax_nn: Callable[..., jax.Array] | None
    torch_name: str | None
    module: str
    default_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    params: tuple[str, ...] = ()
    variants: tuple[Mapping[str, Any], ...] = ()
    module_args: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def cases(self) -> list[dict[str, Any]]:
        """The default keyword arguments followed by each variant merged into them."""
        return [dict(self.default_kwargs)] + [{**self.default_kwargs, **v} for v in self.variants]


def _jax_nn_prelu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    # jax.nn has no prelu; flax's PReLU is a leaky ReLU with the learned slope.
    return jax.nn.leaky_relu(x, alpha)


def _jax_nn_softplus(x: jax.Array, beta: float = 1.0, threshold: float = 20.0) -> jax.Array:
    if beta == 1.0 and threshold == 20.0:
        # jax.nn.softplus has neither; above x = 20 it differs from x by < 2.1e-9 (f32: 0).
        return jax.nn.softplus(x)
    return jnp.where(beta * x > threshold, x, jax.nn.softplus(beta * x) / beta)


_SPECS = (
    ActivationSpec(
        name="relu",
        fn=piecewise.relu,
        kinks=(0.0,),
        piecewise_linear=True,
        reference=reference.relu,
        jax_nn=jax.nn.relu,
        torch_name="relu",
        module="ReLU",
    ),
    ActivationSpec(
        name="relu6",
        fn=piecewise.relu6,
        kinks=(0.0, 6.0),
        piecewise_linear=True,
        reference=reference.relu6,
        jax_nn=jax.nn.relu6,
        torch_name="relu6",
        module="ReLU6",
    ),
    ActivationSpec(
        name="leaky_relu",
        fn=piecewise.leaky_relu,
        kinks=(0.0,),
        piecewise_linear=True,
        reference=reference.leaky_relu,
        jax_nn=jax.nn.leaky_relu,
        torch_name="leaky_relu",
        module="LeakyReLU",
        default_kwargs={"negative_slope": 0.01},
        params=("negative_slope",),
        variants=({"negative_slope": 0.2},),
    ),
    ActivationSpec(
        name="prelu",
        fn=piecewise.prelu,
        kinks=(0.0,),
        piecewise_linear=True,
        reference=reference.prelu,
        jax_nn=_jax_nn_prelu,
        torch_name="prelu",
        module="PReLU",
        module_args={"alpha": "init"},
        default_kwargs={"alpha": 0.25},
        params=("alpha",),
        variants=({"alpha": -0.5},),
    ),
    ActivationSpec(
        name="rrelu",
        fn=piecewise.rrelu,
        kinks=(0.0,),
        piecewise_linear=True,
        reference=reference.rrelu,
        jax_nn=None,
        torch_name="rrelu",
        module="RReLU",
        default_kwargs={"lower": 1.0 / 8.0, "upper": 1.0 / 3.0},
        params=("lower", "upper"),
        variants=({"lower": 0.5, "upper": 0.5},),
    ),
    ActivationSpec(
        name="elu",
        fn=exponential.elu,
        kinks=(0.0,),
        piecewise_linear=False,
        reference=reference.elu,
        jax_nn=jax.nn.elu,
        torch_name="elu",
        module="ELU",
        default_kwargs={"alpha": 1.0},
        params=("alpha",),
        variants=({"alpha": 0.5},),
    ),
    ActivationSpec(
        name="celu",
        fn=exponential.celu,
        kinks=(0.0,),
        piecewise_linear=False,
        reference=reference.celu,
        jax_nn=jax.nn.celu,
        torch_name="celu",
        module="CELU",
        default_kwargs={"alpha": 1.0},
        params=("alpha",),
        variants=({"alpha": 2.0},),
    ),
    ActivationSpec(
        name="selu",
        fn=exponential.selu,
        kinks=(0.0,),
        piecewise_linear=False,
        reference=reference.selu,
        jax_nn=jax.nn.selu,
        torch_name="selu",
        module="SELU",
    ),
    ActivationSpec(
        name="gelu",
        fn=smooth.gelu,
        kinks=(),
        piecewise_linear=False,
        reference=reference.gelu,
        jax_nn=functools.partial(jax.nn.gelu, approximate=False),
        torch_name="gelu",
        module="GELU",
        default_kwargs={"approximate": False},
        variants=({"approximate": True},),
    ),
    ActivationSpec(
        name="silu",
        fn=smooth.silu,
        kinks=(),
        piecewise_linear=False,
        reference=reference.silu,
        jax_nn=jax.nn.silu,
        torch_name="silu",
        module="SiLU",
    ),
    ActivationSpec(
        name="softplus",
        fn=smooth.softplus,
        kinks=(20.0,),
        piecewise_linear=False,
        reference=reference.softplus,
        jax_nn=_jax_nn_softplus,
        torch_name="softplus",
        module="Softplus",
        default_kwargs={"beta": 1.0, "threshold": 20.0},
        params=("beta",),
        variants=({"beta": 2.0, "threshold": 40.0},),
    ),
)

ACTIVATIONS: Mapping[str, ActivationSpec] = types.MappingProxyType({s.name: s for s in _SPECS})
