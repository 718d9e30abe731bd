"""PyTorch ``state_dict`` -> relujax model.

The relujax models name their layers as the PyTorch originals (``conv1``, ``fc1``, ``layer1.0``,
``resblocks.3``, ...), so a key maps to a variable by walking the model:

- ``nnx.Conv``: ``weight`` OIHW -> kernel HWIO, ``bias``;
- ``nnx.Linear``: ``weight`` (out, in) -> kernel (in, out), ``bias``; for the first linear layer
  after a flatten (listed in the model's ``torch_flatten``), PyTorch's C,H,W feature order is
  permuted to NHWC's H,W,C;
- ``BatchNorm``: ``weight, bias, running_mean, running_var`` -> ``scale, bias, mean, var``;
  ``num_batches_tracked`` is accepted and ignored;
- ``PReLU``: ``weight``; ``Activation`` layers are transparent (``act.weight`` is the PReLU's);
- ``BlockStack`` (``NetResDeep.resblocks``, CIFAR ResNet stages): block ``i`` is
  ``<prefix>.<i>`` whether unrolled, scanned (row ``i`` of the stacked variables) or shared (every
  index maps to the one block; the tensors must then be identical, as in the book's
  ``n_blocks * [ResBlock(...)]``, whose state_dict repeats the same tensors under every index).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from relujax._src.models.layers import BatchNorm
from relujax._src.models.monitor import Activation
from relujax._src.models.resnet_cifar import Stage
from relujax._src.models.stack import BlockStack
from relujax._src.nn.activations import PReLU


@dataclasses.dataclass(frozen=True)
class _Target:
    variable: nnx.Variable
    kind: str  # "conv", "linear", "copy", "ignore"
    index: int | None = None
    flatten: tuple[int, int, int] | None = None  # (C, H, W) before the flatten

    def torch_shape(self) -> tuple[int, ...]:
        shape = tuple(self.variable.get_value().shape)
        if self.index is not None:
            shape = shape[1:]
        if self.kind == "conv":
            kh, kw, i, o = shape
            return (o, i, kh, kw)
        if self.kind == "linear":
            return (shape[1], shape[0])
        return shape

    def convert(self, value: np.ndarray) -> np.ndarray:
        if self.kind == "conv":
            return value.transpose(2, 3, 1, 0)
        if self.kind == "linear":
            if self.flatten is not None:
                c, h, w = self.flatten
                out = value.shape[0]
                value = value.reshape(out, c, h, w).transpose(0, 2, 3, 1).reshape(out, -1)
            return value.T
        return value


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def torch_targets(model: nnx.Module) -> dict[str, list[_Target]]:
    """Maps every PyTorch state_dict key of ``model``'s original to its variable(s)."""
    out: dict[str, list[_Target]] = {}

    def add(key: str, target: _Target) -> None:
        out.setdefault(key, []).append(target)

    def walk(m: nnx.Module, prefix: str, index: int | None, flatten: dict) -> None:
        if isinstance(m, nnx.Conv | nnx.Linear):
            kind = "conv" if isinstance(m, nnx.Conv) else "linear"
            add(_join(prefix, "weight"), _Target(m.kernel, kind, index, flatten.get(prefix)))
            if m.bias is not None:
                add(_join(prefix, "bias"), _Target(m.bias, "copy", index))
        elif isinstance(m, BatchNorm):
            for torch_name, var in (
                ("weight", m.scale),
                ("bias", m.bias),
                ("running_mean", m.mean),
                ("running_var", m.var),
            ):
                add(_join(prefix, torch_name), _Target(var, "copy", index))
            add(_join(prefix, "num_batches_tracked"), _Target(m.mean, "ignore", index))
        elif isinstance(m, PReLU):
            add(_join(prefix, "weight"), _Target(m.weight, "copy", index))
        elif isinstance(m, Activation):
            if isinstance(m.fn, nnx.Module):
                walk(m.fn, prefix, index, flatten)
        elif isinstance(m, BlockStack):
            for i in range(m.n):
                key = _join(prefix, m.torch_offset + i)
                if m.shared:
                    walk(m.block, key, index, flatten)
                elif m.scan:
                    walk(m.stacked, key, i, flatten)
                else:
                    walk(m.blocks[i], key, index, flatten)
        elif isinstance(m, Stage):
            walk(m.first, _join(prefix, 0), index, flatten)
            if m.rest is not None:
                walk(m.rest, prefix, index, flatten)
        else:
            own = {_join(prefix, name): shape for name, shape in getattr(m, "torch_flatten", ())}
            for name, child in nnx.iter_children(m):
                if isinstance(child, nnx.Module):
                    walk(child, _join(prefix, name), index, {**flatten, **own})

    walk(model, "", None, {})
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; bfloat16 has no NumPy dtype
        value = value.detach().cpu()
        if not value.is_floating_point() or value.dtype.itemsize < 4:
            value = value.float() if value.is_floating_point() else value
        return value.numpy()
    return np.asarray(value)


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any]) -> None:
    """Copies a PyTorch ``state_dict`` of the same architecture into ``model``, in place.

    ``state_dict`` maps names to ``torch.Tensor`` or NumPy arrays (e.g.
    ``torch_model.state_dict()`` or a loaded checkpoint). Layouts are converted (OIHW -> HWIO,
    linear transposes, the C,H,W -> H,W,C flatten permutation), BatchNorm running statistics and
    PReLU slopes included. Loading is strict: missing, unexpected or mis-shaped keys (and, for a
    shared-block model, differing tensors under the repeated block indices) raise one
    ``ValueError`` listing all of them, and nothing is changed. After loading, the logits equal
    PyTorch's (train and eval mode) to float32 round-off. ``model`` may be abstract
    (``nnx.eval_shape(lambda: resnet18(rngs=nnx.Rngs(0)))``): that skips the random
    initialisation that the state_dict overwrites anyway.

    Example:
      >>> import numpy as np
      >>> from flax import nnx
      >>> from relujax.interop import load_torch_state_dict
      >>> from relujax.models import SimpleNN
      >>> model = SimpleNN(rngs=nnx.Rngs(0))
      >>> sd = {"fc1.weight": np.eye(4), "fc1.bias": np.zeros(4),
      ...       "fc2.weight": np.ones((2, 4)), "fc2.bias": np.zeros(2)}
      >>> load_torch_state_dict(model, sd)
      >>> model.fc2.kernel.shape
      (4, 2)
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_torch_state_dict: state_dict must be a mapping of names to tensors or arrays "
            f"(e.g. torch_model.state_dict()), got {type(state_dict).__name__}."
        )
    targets = torch_targets(model)
    arrays = {k: _to_numpy(v) for k, v in state_dict.items()}
    missing = [k for k, ts in targets.items() if k not in arrays and ts[0].kind != "ignore"]
    unexpected = [k for k in arrays if k not in targets]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    # (variable id, index) -> (first key, converted value): for shared-block consistency.
    updates: dict[tuple[int, int | None], tuple[str, np.ndarray, _Target]] = {}
    for key, value in arrays.items():
        for target in targets.get(key, []):
            if target.kind == "ignore":
                continue
            expected = target.torch_shape()
            if tuple(value.shape) != expected:
                problems.append(
                    f"shape mismatch for {key!r}: model expects {expected}, got {value.shape}"
                )
                continue
            converted = target.convert(value)
            slot = (id(target.variable), target.index)
            if slot in updates:
                first_key, first_value, _ = updates[slot]
                if not np.array_equal(first_value, converted):
                    problems.append(
                        f"{key!r} differs from {first_key!r}, but the model shares one variable "
                        f"between them (shared_blocks=True); load into a model built with "
                        f"shared_blocks=False"
                    )
                continue
            updates[slot] = (key, converted, target)
    if problems:
        raise ValueError(
            f"load_torch_state_dict: the state_dict does not match {type(model).__name__}:\n  "
            + "\n  ".join(problems)
        )
    stacked: dict[int, tuple[nnx.Variable, np.ndarray]] = {}
    for (var_id, index), (_, value, target) in updates.items():
        var = target.variable
        current = var.get_value()  # an array, or a ShapeDtypeStruct in an nnx.eval_shape model
        if index is None:
            var.set_value(jnp.asarray(value, dtype=current.dtype))
        else:
            if var_id not in stacked:
                # Every row of a stacked variable is in the state_dict (else "missing keys").
                stacked[var_id] = (var, np.zeros(current.shape, current.dtype))
            stacked[var_id][1][index] = value
    for var, value in stacked.values():
        var.set_value(jnp.asarray(value))
