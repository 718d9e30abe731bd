"""Activation layers of the models, and the dead-unit monitor they carry.

Every activation application in :mod:`relujax.models` goes through an :class:`Activation`
layer. With monitoring off (the default) it is just ``fn(x)``: no extra state, no extra work.
``set_monitor(model, True)`` gives each layer a small :class:`DeadUnitStats` variable (a subclass
of ``nnx.Intermediate``, so ``nnx.Optimizer(..., wrt=nnx.Param)`` ignores it) that every forward
pass overwrites with two float32 numbers computed from the same activation input:

- ``flat``: the fraction of elements where the activation is flat, ``|f'(x)| < 1e-3``
  (for relu: output exactly 0 with relu'(0) = 0; leaky/PReLU/RReLU slopes above 1e-3 are never
  flat, tanh is flat where it saturates);
- ``dead_channels``: the fraction of channels (last axis) flat for every element of the batch.

``dead_unit_stats(model)`` returns them as ``{layer_path: {"flat": f, "dead_channels": g}}``; it
is traceable, so a jitted train step can return it next to the loss without a second forward
pass. Stats variables are plain NNX state: they flow out of ``nnx.jit``/``nnx.value_and_grad``
like BatchNorm statistics. A layer applied several times in one pass (the shared block of
``NetResDeep(shared_blocks=True)``) keeps the last application; stacked (scanned) blocks give one
entry per block, ``path[i]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src.nn.registry import ACTIVATION_MODULES, accepts_rngs

FLAT_THRESHOLD = 1e-3


class DeadUnitStats(nnx.Intermediate):
    """``[flat_fraction, dead_channel_fraction]`` of one activation layer (float32)."""


class Activation(nnx.Module):
    """One activation layer: ``fn(x)``, plus the dead-unit statistics when monitored.

    ``fn`` is a function (``relujax.relu``, ``jnp.tanh``, ...) or an NNX module (``PReLU()``, ...).

    Example:
      >>> import jax.numpy as jnp
      >>> import relujax
      >>> from relujax.models import Activation
      >>> Activation(relujax.relu)(jnp.array([-1.0, 1.0]))
      Array([0., 1.], dtype=float32)
    """

    def __init__(self, fn: Callable[[jax.Array], jax.Array] | nnx.Module):
        if not callable(fn):
            raise TypeError(f"Activation: expected a callable or an NNX module, got {fn!r}.")
        self.fn = fn
        self.monitor = False
        self.stack_shape: tuple[int, ...] = ()

    def _function(self) -> Callable[[jax.Array], jax.Array]:
        as_function = getattr(self.fn, "as_function", None)
        return as_function() if as_function is not None else self.fn

    def __call__(self, x: jax.Array) -> jax.Array:
        fn = self._function()
        y = fn(x)
        if self.monitor:
            xs = jax.lax.stop_gradient(x)
            _, dy = jax.jvp(fn, (xs,), (jnp.ones_like(xs),))
            flat = jnp.abs(dy) < FLAT_THRESHOLD
            channels = flat.reshape(-1, x.shape[-1]) if x.ndim else flat.reshape(1, 1)
            stats = jnp.stack(
                [
                    jnp.mean(flat, dtype=jnp.float32),
                    jnp.mean(jnp.all(channels, axis=0), dtype=jnp.float32),
                ]
            )
            self.dead_stats[...] = stats
        return y


def set_monitor(model: nnx.Module, on: bool = True) -> None:
    """Switches the dead-unit monitor of every :class:`Activation` layer of ``model`` on or off.

    Switching changes the model's state (a stats variable per layer appears or goes), so jitted
    functions retrace once. Read the statistics with :func:`dead_unit_stats`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import SimpleNN, dead_unit_stats, set_monitor
      >>> model = SimpleNN(rngs=nnx.Rngs(0))
      >>> set_monitor(model, True)
      >>> _ = model(jnp.ones((8, 4)))
      >>> sorted(dead_unit_stats(model))
      ['act']
    """
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Activation):
            module.monitor = bool(on)
            if on and not hasattr(module, "dead_stats"):
                module.dead_stats = DeadUnitStats(jnp.zeros((*module.stack_shape, 2), jnp.float32))
            elif not on and hasattr(module, "dead_stats"):
                del module.dead_stats


def dead_unit_stats(model: nnx.Module) -> dict[str, dict[str, jax.Array]]:
    """The last forward pass's dead-unit statistics: ``{path: {"flat", "dead_channels"}}``.

    Paths join attribute names with ``/`` (``"act1"``, ``"resblocks/3/act"``); the layers of
    stacked (scanned) blocks appear once per block as ``"resblocks/act[3]"``. Empty when the
    monitor is off. Usable inside ``nnx.jit``.
    """
    out: dict[str, dict[str, jax.Array]] = {}
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Activation) and module.monitor and hasattr(module, "dead_stats"):
            name = "/".join(str(p) for p in path)
            value = module.dead_stats[...]
            if value.ndim == 1:
                out[name] = {"flat": value[0], "dead_channels": value[1]}
            else:
                for i in range(value.shape[0]):
                    out[f"{name}[{i}]"] = {"flat": value[i, 0], "dead_channels": value[i, 1]}
    return out


ActivationLike = Callable[..., Any] | type | str | nnx.Module | None


def activation_factory(
    activation: ActivationLike, default: ActivationLike, *, where: str
) -> Callable[[nnx.Rngs | None], Activation]:
    """Turns a model's ``activation=`` argument into a per-layer factory of :class:`Activation`.

    ``activation`` may be None (the model's ``default``), a name of ``relujax.ACTIVATIONS``
    (its module of ``relujax.nn.ACTIVATION_MODULES``), an NNX module class (one fresh instance
    per layer, so ``PReLU`` gets per-layer parameters), an NNX module instance (the SAME
    instance in every layer: shared parameters), or any other callable ``f(x)``.
    """
    if activation is None:
        activation = default
    if isinstance(activation, str):
        if activation.lower() not in ACTIVATION_MODULES:
            raise ValueError(
                f"{where}: unknown activation name {activation!r}; expected one of "
                f"{sorted(ACTIVATION_MODULES)} (relujax.ACTIVATIONS), a callable such as "
                f"jnp.tanh, or an NNX module class."
            )
        activation = ACTIVATION_MODULES[activation.lower()]
    if inspect.isclass(activation):
        if not issubclass(activation, nnx.Module):
            raise TypeError(
                f"{where}: activation class {activation.__name__} is not an nnx.Module subclass; "
                f"pass an NNX module class, a module instance, or a function."
            )
        cls = activation
        if accepts_rngs(cls):
            return lambda rngs: Activation(cls(rngs=rngs))
        return lambda rngs: Activation(cls())
    if not callable(activation):
        raise TypeError(
            f"{where}: activation must be a callable, an NNX module class or a name, got "
            f"{type(activation).__name__}."
        )
    fn = activation
    return lambda rngs: Activation(fn)
