"""Checkpoints with orbax-checkpoint: atomic, verified by checksums, pruned only when safe.

A checkpoint holds every array of the run (parameters, BatchNorm statistics, RNG state,
optimizer state, the running metric sums of a half-done epoch) as one list of leaves, and a JSON
item with the config, the position (epoch, batch, step), the metrics so far and the leaf paths.
Orbax writes into a temporary folder and renames it when complete, so a run killed mid-save
leaves the previous checkpoint as the latest good one.

A rename proves the write finished, not that the bytes on disk are still the ones written: the
JSON item also records a SHA-256 of every array's bytes and of itself. `save` reads each new
checkpoint back and checks it before older ones are pruned; `restore` takes the newest
checkpoint that verifies and reports the ones it skipped (`Checkpointer.skipped`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.WARNING)

CHECKSUM_KEY = "sha256"  # {"arrays": [hex per leaf], "meta": hex of the rest of the JSON item}


class CheckpointError(ValueError):
    """A checkpoint that does not exist, does not verify, or does not fit the run."""


class _Damaged(Exception):  # noqa: N818 (internal: a checkpoint whose bytes do not verify)
    pass


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> tuple[list[str], list[Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat], [leaf for _, leaf in flat]


def _host(x: Any) -> np.ndarray | None:
    """`x` as numpy on this process; None for a sharded array this process sees only part of."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0)) if x.is_fully_replicated else None
    return np.asarray(x)


def array_digest(x: Any) -> str | None:
    """SHA-256 of an array's dtype, shape and bytes (None when not all of it is on this host)."""
    h = _host(x)
    if h is None:
        return None
    h = np.ascontiguousarray(h)
    d = hashlib.sha256(f"{h.dtype.str}{h.shape}".encode())
    d.update(h.tobytes())
    return d.hexdigest()


def _meta_digest(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Checkpointer:
    """Saves and restores a run's state in `directory` (created if missing).

    Args:
      directory: the checkpoints folder.
      keep: how many verified checkpoints to keep; older ones are deleted only after a newer
        one has been written, read back and verified.
      cleanup: delete the temporary folders of saves cut short (kill -9, a full disk). Only for
        the run that owns the folder (it holds the workdir lock): a reader of a live run's
        checkpoints would delete the save in progress.

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> from relujax.training import Checkpointer
        >>> ckpt = Checkpointer(tempfile.mkdtemp(), keep=2)
        >>> ckpt.save(3, {"w": jnp.ones(2)}, {"epoch": 1})
        >>> tree, meta = ckpt.restore({"w": jnp.zeros(2)})
        >>> float(tree["w"][0]), meta["epoch"]
        (1.0, 1)
    """

    def __init__(
        self, directory: str | pathlib.Path, *, keep: int = 3, cleanup: bool = False
    ) -> None:
        self.directory = pathlib.Path(directory).absolute()
        self.keep = keep
        # Pruning is ours (see `save`), not orbax's: it would delete before verifying.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=cleanup,
        )
        handlers = {"arrays": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )
        self.skipped: list[tuple[int, str]] = []
        """(step, reason) of each newer checkpoint the last `restore` passed over as damaged."""

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any, meta: Mapping[str, Any]) -> None:
        """Writes `tree` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`, atomically.

        The checkpoint is read back and verified before checkpoints beyond the newest `keep` are
        deleted; one that does not verify raises CheckpointError and nothing is deleted. An
        OSError of the filesystem (disk full, read-only) propagates, the older checkpoints intact.
        """
        if step in self._manager.all_steps():
            return
        paths, leaves = _flatten(tree)
        leaves = [jax.random.key_data(x) if _is_key(x) else x for x in leaves]
        meta = json.loads(json.dumps(dict(meta, leaf_paths=paths)))  # as it will read back
        meta[CHECKSUM_KEY] = {
            "arrays": [array_digest(x) for x in leaves],
            "meta": _meta_digest(meta),
        }
        self._manager.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)
            ),
        )
        self._manager.wait_until_finished()
        try:
            self._load(step)
        except _Damaged as e:
            raise CheckpointError(
                f"Checkpointer.save: checkpoint {step} in {self.directory} does not read back as "
                f"written ({e}); the older checkpoints are kept. Is the disk failing?"
            ) from e
        for old in self.steps()[: -self.keep]:
            self._manager.delete(old)

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON item of checkpoint `step` (default: the latest), verified."""
        step = self._pick(step)
        try:
            return self._read_meta(step)
        except _Damaged as e:
            raise CheckpointError(f"Checkpointer: checkpoint {step} is damaged: {e}") from e

    def verify(self, step: int) -> str | None:
        """None when checkpoint `step` reads back and matches its checksums, else the reason."""
        try:
            self._load(self._pick(step))
        except _Damaged as e:
            return str(e)
        return None

    def arrays(self, step: int | None = None) -> dict[str, np.ndarray]:
        """Checkpoint `step` (default: the latest) as {leaf path: numpy array}, verified.

        PRNG keys come back as their raw key data.
        """
        step = self._pick(step)
        try:
            meta, arrays = self._load(step)
        except _Damaged as e:
            raise CheckpointError(f"Checkpointer: checkpoint {step} is damaged: {e}") from e
        return {p: np.asarray(a) for p, a in zip(meta["leaf_paths"], arrays, strict=True)}

    def restore(
        self,
        template: Any,
        step: int | None = None,
        *,
        check_meta: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Restores a checkpoint into the structure of `template`; returns (tree, meta).

        With `step` None, the newest checkpoint that verifies: damaged newer ones are passed over
        and listed in `self.skipped` (nothing is deleted); when none verifies, CheckpointError.
        Every array comes back with the dtype, shape and sharding of the template's leaf; a
        different structure (another model or optimizer) raises CheckpointError, and so does
        `check_meta(meta)` (e.g. a config check) raising one.
        """
        candidates = [self._pick(step)] if step is not None else self.steps()[::-1]
        if not candidates:
            self._pick(None)  # raises: no checkpoint
        self.skipped = []
        paths, leaves = _flatten(template)
        for s in candidates:
            try:
                meta, arrays = self._load(s, template=(paths, leaves), check_meta=check_meta)
            except _Damaged as e:
                self.skipped.append((s, str(e)))
                continue
            restored = []
            for want, got in zip(leaves, arrays, strict=True):
                if _is_key(want):
                    got = jax.random.wrap_key_data(got, impl=jax.random.key_impl(want))
                restored.append(got)
            treedef = jax.tree_util.tree_structure(template)
            return jax.tree_util.tree_unflatten(treedef, restored), meta
        reasons = "; ".join(f"step {s}: {r}" for s, r in self.skipped)
        raise CheckpointError(
            f"no checkpoint in {self.directory} verifies ({reasons}). Nothing was deleted; move "
            "the workdir aside and start a new run, or restore the checkpoints from a backup"
        )

    def set_aside(self, step: int) -> pathlib.Path:
        """Moves checkpoint `step` out of the way (to `<directory>.damaged/`), keeping its bytes.

        A run resumed from an older checkpoint reaches `step` again and must write it anew.
        """
        dest = self.directory.with_name(self.directory.name + ".damaged")
        dest.mkdir(exist_ok=True)
        target = dest / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        (self.directory / str(step)).rename(target)
        self._manager.reload()
        return target

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

    def _read_meta(self, step: int) -> dict[str, Any]:
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(out["meta"])
        except Exception as e:  # garbage JSON, missing file, ...: the checkpoint is unusable
            raise _Damaged(f"its metadata does not read ({type(e).__name__}: {_short(e)})") from e
        sums = meta.get(CHECKSUM_KEY)
        if sums is not None and (
            not isinstance(sums, dict) or sums.get("meta") != _meta_digest(meta)
        ):
            raise _Damaged("its metadata does not match its checksum")
        if not isinstance(meta.get("leaf_paths"), list):
            raise _Damaged("its metadata lists no arrays")
        return meta

    def _load(
        self,
        step: int,
        *,
        template: tuple[list[str], list[Any]] | None = None,
        check_meta: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[dict[str, Any], list[Any]]:
        """Reads and verifies checkpoint `step`: (meta, arrays). Raises _Damaged."""
        meta = self._read_meta(step)
        if check_meta is not None:
            check_meta(meta)
        saved = meta["leaf_paths"]
        if template is None:
            try:
                info = self._manager.item_metadata(step)["arrays"]
                device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                abstract = [jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device) for m in info]
            except Exception as e:
                raise _Damaged(f"its array index does not read ({_short(e)})") from e
        else:
            paths, leaves = template
            if saved != paths:
                missing = sorted(set(paths) - set(saved))[:5]
                extra = sorted(set(saved) - set(paths))[:5]
                raise CheckpointError(
                    f"Checkpointer.restore: checkpoint {step} in {self.directory} holds a "
                    f"different state ({len(saved)} arrays, this run has {len(paths)}; missing "
                    f"e.g. {missing}, unexpected e.g. {extra}). Was it made by another model or "
                    "optimizer?"
                )
            abstract = [_abstract(x) for x in leaves]
        try:
            out = self._manager.restore(
                step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract))
            )
            arrays = list(out["arrays"])
        except Exception as e:  # a truncated, deleted or undecodable array file
            raise _Damaged(f"its arrays do not read ({type(e).__name__}: {_short(e)})") from e
        for path, want, got in zip(saved, abstract, arrays, strict=True):
            if tuple(got.shape) != tuple(want.shape):
                raise CheckpointError(
                    f"Checkpointer.restore: {path} has shape {got.shape} in checkpoint {step}, "
                    f"the run expects {want.shape}"
                )
        sums = meta.get(CHECKSUM_KEY)
        if sums is not None:
            expected = sums.get("arrays") or []
            if len(expected) != len(arrays):
                raise _Damaged("its checksums do not cover its arrays")
            for path, digest, got in zip(saved, expected, arrays, strict=True):
                actual = array_digest(got)
                if digest is not None and actual is not None and actual != digest:
                    raise _Damaged(f"array {path} does not match its checksum")
        return meta, arrays


def _short(e: BaseException) -> str:
    """The first line of an error, without TensorStore's object dump, at most 160 characters."""
    text = (str(e).strip().splitlines() or [""])[0].split(". See full TensorStore")[0]
    return text[:160] + "..." if len(text) > 160 else text


def _abstract(x: Any) -> Any:
    if _is_key(x):
        data = jax.random.key_data(x)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=data.sharding)
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)
