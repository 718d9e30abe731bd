"""Flax NNX modules around the functional activations of :mod:`relujax`.

Each module stores its hyperparameters as static attributes and calls the functional core, so it
inherits the core's derivative rules, dtype behaviour and memory use. ``PReLU`` owns a learnable
``nnx.Param``; ``RReLU`` draws random slopes in training mode and follows ``model.train()`` /
``model.eval()`` through its ``deterministic`` attribute (the attribute ``nnx.Dropout`` uses).

Every module also has ``as_function()``: the activation as a pure function of ``x`` for this call
(parameters read, random slopes drawn), used by the dead-unit monitor of :mod:`relujax.models`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src import activations as F

_Fn = Callable[[jax.Array], jax.Array]


class _Activation(nnx.Module):
    """Base class: ``__call__(x) = as_function()(x)``.

    A subclass names its function in ``_fn`` and the attributes passed to it as keywords in
    ``_hyper`` (the attributes are named as the function's keywords); PReLU and RReLU, which
    read a parameter or draw a key per call, override ``as_function``.
    """

    _fn: ClassVar[Callable[..., jax.Array]]
    _hyper: ClassVar[tuple[str, ...]] = ()

    def as_function(self) -> _Fn:
        fn, kwargs = type(self)._fn, {k: getattr(self, k) for k in self._hyper}
        return lambda x: fn(x, **kwargs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.as_function()(x)


class ReLU(_Activation):
    """``relujax.relu`` as a module.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import ReLU
      >>> ReLU()(jnp.array([-1.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """

    _fn = staticmethod(F.relu)
    _hyper = ("subgradient",)

    def __init__(self, *, subgradient: float = 0.0):
        self.subgradient = subgradient


class ReLU6(_Activation):
    """``relujax.relu6`` as a module.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import ReLU6
      >>> ReLU6()(jnp.array([-1.0, 7.0]))
      Array([0., 6.], dtype=float32)
    """

    _fn = staticmethod(F.relu6)
    _hyper = ("subgradient",)

    def __init__(self, *, subgradient: float = 0.0):
        self.subgradient = subgradient


class LeakyReLU(_Activation):
    """``relujax.leaky_relu`` as a module (slope 0.01 by default, as PyTorch and jax.nn).

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import LeakyReLU
      >>> LeakyReLU(0.5)(jnp.array([-2.0, 2.0]))
      Array([-1.,  2.], dtype=float32)
    """

    _fn = staticmethod(F.leaky_relu)
    _hyper = ("negative_slope", "subgradient")

    def __init__(self, negative_slope: float = 0.01, *, subgradient: float = 0.0):
        self.negative_slope = negative_slope
        self.subgradient = subgradient


class PReLU(_Activation):
    """Parametric ReLU (He et al. 2015): ``x`` if ``x > 0`` else ``weight * x``.

    ``num_parameters`` is 1 (one slope shared by all elements) or the number of channels ``C``
    (one slope per channel of the LAST axis, NHWC; PyTorch uses axis 1 of NCHW). The slope lives in
    ``self.weight``, an ``nnx.Param`` of shape ``(num_parameters,)`` (the name and shape of
    PyTorch's ``PReLU.weight``), initialised to ``init`` and cast to the input's dtype at call time.
    He et al. train it without weight decay: exclude it with a mask on ``PReLU`` paths.

    ``rngs`` is accepted (and unused) so that every activation module can be built the same way.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import PReLU
      >>> PReLU()(jnp.array([-4.0, 2.0]))
      Array([-1.,  2.], dtype=float32)
    """

    def __init__(
        self,
        num_parameters: int = 1,
        init: float = 0.25,
        *,
        rngs: nnx.Rngs | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        subgradient: float = 0.0,
    ):
        del rngs
        if not isinstance(num_parameters, int) or num_parameters < 1:
            raise ValueError(
                f"PReLU: num_parameters must be a positive int (1 or the number of channels), "
                f"got {num_parameters!r}."
            )
        self.num_parameters = num_parameters
        self.subgradient = subgradient
        self.weight = nnx.Param(jnp.full((num_parameters,), init, dtype=param_dtype))

    def as_function(self) -> _Fn:
        alpha = self.weight[...]
        n = self.num_parameters

        def fn(x: jax.Array) -> jax.Array:
            if n > 1 and (x.ndim == 0 or x.shape[-1] != n):
                raise ValueError(
                    f"PReLU: num_parameters={n} slopes apply per channel over the last axis, "
                    f"but the input has shape {x.shape}; use num_parameters=1 or put the "
                    f"{n} channels last (NHWC)."
                )
            # prelu casts alpha to x.dtype and accumulates its gradient in float32 or wider.
            return F.prelu(x, alpha, subgradient=self.subgradient)

        return fn


class RReLU(_Activation):
    """Randomized leaky ReLU (Xu et al. 2015), as PyTorch's ``nn.RReLU``.

    In training mode (``deterministic=False``, set by ``model.train()``) every element gets its own
    slope drawn from U(lower, upper) with a key from ``rngs`` (stream ``rng_collection``); in eval
    mode (``model.eval()``) the slope is the mean ``(lower + upper) / 2``. Like PyTorch modules and
    ``nnx.Dropout``, a new module starts in training mode.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.nn import RReLU
      >>> act = RReLU(0.1, 0.3, rngs=nnx.Rngs(0))
      >>> act.eval()
      >>> act(jnp.array([-10.0, 1.0]))
      Array([-2.,  1.], dtype=float32)
    """

    def __init__(
        self,
        lower: float = 1.0 / 8.0,
        upper: float = 1.0 / 3.0,
        *,
        rngs: nnx.Rngs | None = None,
        deterministic: bool = False,
        rng_collection: str = "dropout",
        subgradient: float = 0.0,
    ):
        if not lower <= upper:
            raise ValueError(f"RReLU: expected lower <= upper, got lower={lower}, upper={upper}.")
        self.lower = lower
        self.upper = upper
        self.deterministic = deterministic
        self.subgradient = subgradient
        self.rng_collection = rng_collection
        self.rngs = rngs[rng_collection].fork() if rngs is not None else nnx.data(None)

    def as_function(self) -> _Fn:
        if self.deterministic:
            key = None
        elif self.rngs is None:
            raise ValueError(
                "RReLU: training mode (deterministic=False) draws random slopes and needs `rngs`; "
                "build it with RReLU(..., rngs=nnx.Rngs(0)) or call model.eval()."
            )
        else:
            key = self.rngs()
        return lambda x: F.rrelu(x, key, self.lower, self.upper, subgradient=self.subgradient)


class ELU(_Activation):
    """``relujax.elu`` as a module.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import ELU
      >>> ELU()(jnp.array([0.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """

    _fn = staticmethod(F.elu)
    _hyper = ("alpha",)

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha


class CELU(_Activation):
    """``relujax.celu`` as a module.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import CELU
      >>> CELU()(jnp.array([0.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """

    _fn = staticmethod(F.celu)
    _hyper = ("alpha",)

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha


class SELU(_Activation):
    """``relujax.selu`` as a module.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import SELU
      >>> SELU()(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """

    _fn = staticmethod(F.selu)


class GELU(_Activation):
    """``relujax.gelu`` as a module (exact erf form by default, as PyTorch).

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import GELU
      >>> GELU(approximate=True)(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """

    _fn = staticmethod(F.gelu)
    _hyper = ("approximate",)

    def __init__(self, approximate: bool = False):
        self.approximate = approximate


class SiLU(_Activation):
    """``relujax.silu`` as a module.

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import SiLU
      >>> SiLU()(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """

    _fn = staticmethod(F.silu)


class Softplus(_Activation):
    """``relujax.softplus`` as a module (beta 1, threshold 20, as PyTorch).

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.nn import Softplus
      >>> Softplus()(jnp.array([30.0]))
      Array([30.], dtype=float32)
    """

    _fn = staticmethod(F.softplus)
    _hyper = ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        self.beta = beta
        self.threshold = threshold
