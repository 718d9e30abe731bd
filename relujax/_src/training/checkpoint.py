"""Checkpoints with orbax-checkpoint: atomic, the last N kept, validated on restore.

A checkpoint holds every array of the run (parameters, BatchNorm statistics, RNG state,
optimizer state, the running metric sums of a half-done epoch) as one list of leaves, and a JSON
item with the config, the position (epoch, batch, step), the metrics so far and the leaf paths.
Orbax writes into a temporary folder and renames it when complete, so a run killed mid-save
leaves the previous checkpoint as the latest good one.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.WARNING)


class CheckpointError(ValueError):
    """A checkpoint that does not exist or does not fit the run it should resume."""


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> tuple[list[str], list[Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat], [leaf for _, leaf in flat]


class Checkpointer:
    """Saves and restores a run's state in `directory` (created if missing).

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> from relujax.training import Checkpointer
        >>> ckpt = Checkpointer(tempfile.mkdtemp(), keep=2)
        >>> ckpt.save(3, {"w": jnp.ones(2)}, {"epoch": 1})
        >>> tree, meta = ckpt.restore({"w": jnp.zeros(2)})
        >>> float(tree["w"][0]), meta["epoch"]
        (1.0, 1)
    """

    def __init__(self, directory: str | pathlib.Path, *, keep: int = 3) -> None:
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        handlers = {"arrays": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any, meta: Mapping[str, Any]) -> None:
        """Writes `tree` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`, atomically."""
        if step in self._manager.all_steps():
            return
        paths, leaves = _flatten(tree)
        leaves = [jax.random.key_data(x) if _is_key(x) else x for x in leaves]
        meta = dict(meta, leaf_paths=paths)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)
            ),
        )
        self._manager.wait_until_finished()

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON item of checkpoint `step` (default: the latest)."""
        step = self._pick(step)
        out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def arrays(self, step: int | None = None) -> dict[str, np.ndarray]:
        """Checkpoint `step` (default: the latest) as {leaf path: numpy array}, no template needed.

        PRNG keys come back as their raw key data.
        """
        step = self._pick(step)
        meta = self.read_meta(step)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        saved = self._manager.item_metadata(step)["arrays"]
        abstract = [jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device) for m in saved]
        out = self._manager.restore(
            step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract))
        )
        return {p: np.asarray(a) for p, a in zip(meta["leaf_paths"], out["arrays"], strict=True)}

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint `step` (default: the latest) into the structure of `template`.

        Every array comes back with the dtype, shape and sharding of the template's leaf; a
        different structure (another model or optimizer) raises CheckpointError.
        """
        step = self._pick(step)
        meta = self.read_meta(step)
        paths, leaves = _flatten(template)
        if meta.get("leaf_paths") != paths:
            saved = meta.get("leaf_paths") or []
            missing = sorted(set(paths) - set(saved))[:5]
            extra = sorted(set(saved) - set(paths))[:5]
            raise CheckpointError(
                f"Checkpointer.restore: checkpoint {step} in {self.directory} holds a different "
                f"state ({len(saved)} arrays, this run has {len(paths)}; missing e.g. {missing}, "
                f"unexpected e.g. {extra}). Was it made by another model or optimizer?"
            )
        abstract = [_abstract(x) for x in leaves]
        out = self._manager.restore(
            step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract))
        )
        restored = []
        for path, want, got in zip(paths, leaves, out["arrays"], strict=True):
            if _is_key(want):
                got = jax.random.wrap_key_data(got, impl=jax.random.key_impl(want))
            if got.shape != want.shape:
                raise CheckpointError(
                    f"Checkpointer.restore: {path} has shape {got.shape} in checkpoint {step}, "
                    f"the run expects {want.shape}"
                )
            restored.append(got)
        treedef = jax.tree_util.tree_structure(template)
        return jax.tree_util.tree_unflatten(treedef, restored), meta

    def close(self) -> None:
        self._manager.close()

    def _pick(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"Checkpointer: no complete checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"Checkpointer: no checkpoint {step} in {self.directory}")
        return step


def _abstract(x: Any) -> Any:
    if _is_key(x):
        data = jax.random.key_data(x)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=data.sharding)
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)
