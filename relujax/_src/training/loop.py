"""The training loop: epochs of jitted steps, evaluation, metrics, checkpoints, resume, signals."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from relujax._src import policy
from relujax._src.data.sharding import (
    batch_sharding,
    data_mesh,
    put,
    replicated_sharding,
    table_sharding,
    to_host,
)
from relujax._src.models._inputs import ModelInputError
from relujax._src.training import metrics as mio
from relujax._src.training.checkpoint import Checkpointer, CheckpointError
from relujax._src.training.config import ConfigError, TrainConfig
from relujax._src.training.guards import WriteError, check_labels, kept, why, write_or_stop
from relujax._src.training.lock import WorkdirLock
from relujax._src.training.optim import make_optimizer
from relujax._src.training.progress import Progress
from relujax._src.training.setup import (
    DTYPES,
    DeadUnitProbe,
    RunState,
    build_model,
    check_batching,
    data_on_device,
    split_model,
    steps_per_epoch,
)
from relujax._src.training.steps import make_steps, zero_metrics


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(Exception):  # noqa: N818 (not an error: a requested stop)
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `signum` says which signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, int]]:
    flag: dict[str, int] = {}

    def handler(signum: int, frame: Any) -> None:
        del frame
        flag.setdefault("signum", signum)

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no handlers, nothing to restore
        yield flag
        return
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _read(m: dict[str, jax.Array]) -> tuple[float, float, int, bool]:
    h = {k: to_host(v) for k, v in m.items()}
    n = int(h["count"])
    return float(h["loss_sum"]) / max(n, 1), int(h["correct"]) / max(n, 1), n, bool(h["finite"])


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    dataset: Any = None,
    model_fn: Callable[[TrainConfig, int], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the training run `config` and returns its summary.

    Writes metrics.jsonl, summary.json, curves.png and checkpoints/ in `config.workdir`.
    `dataset` (default: `relujax.data.load_dataset(config.dataset, config.data_dir, ...)`) and
    `model_fn(config, num_classes)` (default: `relujax.models.create_model`) can be injected.
    Raises ConfigError for a config that cannot run or resume (WorkdirBusy, a ConfigError, while
    another process runs in the workdir), CheckpointError when no checkpoint verifies,
    NonFiniteLossError when the loss diverges, WriteError when an output cannot be written,
    and Interrupted after SIGINT/SIGTERM once the checkpoint is written.

    Example:
        >>> from relujax.training import TrainConfig, train
        >>> cfg = TrainConfig(model="netdepth", dataset="synthetic", epochs=1, workdir="/tmp/rj")
        >>> summary = train(cfg)  # doctest: +SKIP
    """
    workdir = pathlib.Path(config.workdir)
    lock = None
    if jax.process_index() == 0:  # the process that writes the workdir's files
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"--workdir {workdir}: exists and is not a folder") from None
        except OSError as e:
            raise WriteError(f"--workdir {workdir}: cannot create it ({why(e)})") from e
        lock = WorkdirLock(workdir).acquire()
    try:
        return _train(config, resume, dataset, model_fn, log)
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: TrainConfig,
    resume: bool,
    dataset: Any,
    model_fn: Callable[[TrainConfig, int], Any] | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    from relujax import data as rdata

    lead = jax.process_index() == 0  # the process that logs and writes the metrics files
    progress = Progress(bar=config.progress, stream=None if lead else open(os.devnull, "w"))
    log = (log or progress.line) if lead else (lambda line: None)
    workdir = pathlib.Path(config.workdir)
    if dataset is None:
        dataset = rdata.load_dataset(config.dataset, config.data_dir, **config.dataset_kwargs)
    ds = dataset
    check_labels(ds)
    mesh = data_mesh()
    check_batching(config, ds, mesh.size)
    model = (model_fn or build_model)(config, ds.num_classes)
    train_gd, eval_gd, params, rest = split_model(model)
    nb = steps_per_epoch(ds.n_train, config.batch_size)
    tx, schedule = make_optimizer(config, model, params, nb)
    rep = replicated_sharding(mesh)
    state = RunState(params, rest, tx.init(params), zero_metrics())
    state = RunState.from_tree(jax.tree.map(lambda x: put(x, rep), state.tree()))
    data = data_on_device(ds, mesh)
    dtype = DTYPES[config.dtype]
    steps = make_steps(
        train_gd,
        eval_gd,
        tx,
        get_batch=rdata.get_batch,
        mean=data.mean,
        std=data.std,
        dtype=dtype,
        augment=config.augment,
        seed=config.seed,
        l2=config.l2,
        eval_train_mode=config.eval_train_mode,
        batch_sharding=batch_sharding(mesh),
    )
    speed = policy.current()  # what runs (relujax.policy), printed once and in summary.json
    log(f"speed policy: {speed}")
    probe_gd = train_gd if config.eval_train_mode else eval_gd
    probe = DeadUnitProbe(probe_gd, rdata.get_batch, data, dtype, rep)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints, cleanup=True)

    # Where to start: fresh, or from the last good checkpoint.
    epoch, batch, history, seconds_before = 0, 0, [], 0.0
    if ckpt.steps() and not resume:
        raise ConfigError(
            f"--workdir {workdir} already holds checkpoints (steps {ckpt.steps()}); pass --resume "
            "to continue that run, or choose a new --workdir"
        )
    if resume and ckpt.steps():
        tree, meta = ckpt.restore(
            state.tree(), check_meta=lambda m: config.check_resumable(m["config"])
        )
        state = RunState.from_tree(tree)
        epoch, batch, history = meta["epoch"], meta["batch"], meta["history"]
        seconds_before = meta.get("epoch_seconds", 0.0)
        if ckpt.skipped:
            aside: list[pathlib.Path] = []
            for s, _ in ckpt.skipped if lead else []:  # its step must be written anew
                write_or_stop(
                    ckpt.directory / str(s), ckpt, lambda s=s: aside.append(ckpt.set_aside(s))
                )
            reasons = "; ".join(f"step {s}: {why}" for s, why in ckpt.skipped)
            moved = f", moved to {aside[0].parent}" if aside else ""
            log(f"--resume: skipped damaged checkpoint(s) ({reasons}){moved}")
        where = f"epoch {epoch + 1} batch {batch}" if batch else f"the end of epoch {epoch}"
        log(f"resuming {workdir} from {where} (checkpoint step {epoch * nb + batch})")
        if lead:
            write_or_stop(
                workdir / "metrics.jsonl", ckpt, lambda: mio.write_metrics(workdir, history)
            )
    elif resume:
        log(f"--resume: no checkpoint in {workdir}/checkpoints yet; starting from scratch")

    eval_bs = config.eval_batch_size or config.batch_size
    idx_eval, mask_eval = rdata.epoch_indices(ds.n_test, eval_bs, seed=0, epoch=0, shuffle=False)
    idx_eval, mask_eval = put(idx_eval, table_sharding(mesh)), put(mask_eval, table_sharding(mesh))
    step_ids = [put(np.int32(i), rep) for i in range(max(nb, idx_eval.shape[0]))]

    # Compile both steps once, ahead of time: a mismatched call errors instead of recompiling.
    t0 = time.perf_counter()
    idx0, mask0 = _epoch_table(rdata, ds, config, 0, mesh)
    try:
        lowered = steps.train.lower(
            *state.tree().values(),
            data.x_train,
            data.y_train,
            idx0,
            mask0,
            step_ids[0],
            step_ids[0],
        )
    except ModelInputError as e:  # e.g. netdepth (32x32 RGB) on MNIST (28x28 grayscale)
        raise ConfigError(f"--model {config.model} on --dataset {ds.name}: {e}") from e
    train_c = lowered.compile()
    eval_c = steps.evaluate.lower(
        state.params,
        state.rest,
        state.metrics,
        data.x_test,
        data.y_test,
        idx_eval,
        mask_eval,
        step_ids[0],
    ).compile()
    compile_seconds = time.perf_counter() - t0
    log(
        f"model {config.model} ({_count(state.params):,} parameters) on {ds.name} "
        f"({ds.n_train} train / {ds.n_test} val), {mesh.size} device(s) "
        f"[{jax.devices()[0].platform}], compiled in {compile_seconds:.1f} s"
    )

    def save(epoch_: int, batch_: int, seconds: float) -> None:
        meta = {
            "config": config.to_dict(),
            "epoch": epoch_,
            "batch": batch_,
            "history": history,
            "epoch_seconds": seconds,
        }
        step = epoch_ * nb + batch_
        try:
            ckpt.save(step, state.tree(), meta)
        except CheckpointError:
            raise
        except Exception as e:  # orbax/tensorstore wrap the OSError of a full or read-only disk
            raise WriteError(
                f"could not write checkpoint {step} in {ckpt.directory} ({why(e)}); stopped. "
                f"{kept(ckpt)}"
            ) from e

    hint = " or --dtype float32" if config.dtype != "float32" else ""

    def diverged(ep: int, b: int) -> NonFiniteLossError:
        last = ckpt.latest_step()
        kept = (
            f"the last good checkpoint is step {last} in {ckpt.directory}"
            if last
            else ("no checkpoint was written yet")
        )
        return NonFiniteLossError(
            f"the training loss became non-finite in epoch {ep + 1} (by batch {b}); stopped, "
            f"{kept}. Try a lower --lr{hint}."
        )

    # XLA:CPU with several (virtual) devices can deadlock in the all-reduce of back-to-back
    # asynchronously dispatched steps when cores are few; waiting for each step avoids it.
    sync = mesh.size > 1 and jax.devices()[0].platform == "cpu"
    start_wall = time.perf_counter()
    with _stop_on_signals() as stop:
        while epoch < config.epochs:
            idx, mask = _epoch_table(rdata, ds, config, epoch, mesh)
            e_id = put(np.int32(epoch), rep)
            progress.start_epoch()
            t_epoch = time.perf_counter()
            for i in range(batch, nb):
                p, r, o, m = train_c(
                    *state.tree().values(), data.x_train, data.y_train, idx, mask, step_ids[i], e_id
                )
                state = RunState(p, r, o, m)
                if sync:
                    jax.block_until_ready(m)
                at_log = config.log_every and (i + 1) % config.log_every == 0 and i + 1 < nb
                if at_log or "signum" in stop:
                    loss, acc, n, finite = _read(state.metrics)
                    if not finite:
                        raise diverged(epoch, i + 1)
                    if at_log:
                        progress.update(epoch + 1, config.epochs, i + 1, nb, loss, acc, n)
                if "signum" in stop:
                    spent = seconds_before + time.perf_counter() - t_epoch
                    save(epoch, i + 1, spent)
                    raise Interrupted(stop["signum"], _stopped(stop["signum"], ckpt, epoch, i + 1))
            train_loss, train_acc, n, finite = _read(state.metrics)
            seconds = seconds_before + time.perf_counter() - t_epoch
            if not finite:
                raise diverged(epoch, nb)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": None,
                "val_acc": None,
                "seconds": round(seconds, 4),
                "images_per_s": round(n / max(seconds, 1e-9), 1),
                "lr": float(schedule((epoch + 1) * nb - 1)),
            }
            last_epoch = epoch + 1 == config.epochs
            if (epoch + 1) % config.eval_every == 0 or last_epoch:
                t_eval = time.perf_counter()
                r, m = state.rest, put(zero_metrics(), rep)
                for i in range(idx_eval.shape[0]):
                    r, m = eval_c(
                        state.params,
                        r,
                        m,
                        data.x_test,
                        data.y_test,
                        idx_eval,
                        mask_eval,
                        step_ids[i],
                    )
                    if sync:
                        jax.block_until_ready(m)
                state = RunState(state.params, r, state.opt_state, state.metrics)
                record["val_loss"], record["val_acc"], _, _ = _read(m)
                record["eval_seconds"] = round(time.perf_counter() - t_eval, 4)
            record["dead_units"] = probe(state.params, state.rest)
            history.append(record)
            epoch, batch, seconds_before = epoch + 1, 0, 0.0
            state = RunState(state.params, state.rest, state.opt_state, put(zero_metrics(), rep))
            if epoch % config.checkpoint_every == 0 or last_epoch or "signum" in stop:
                save(epoch, 0, 0.0)
            if lead:
                write_or_stop(
                    workdir / "metrics.jsonl", ckpt, lambda: mio.write_metrics(workdir, history)
                )
                write_or_stop(
                    workdir / "curves.png", ckpt, lambda: mio.plot_curves(workdir, history)
                )
            log(_epoch_line(record, config.epochs))
            if "signum" in stop and not last_epoch:
                raise Interrupted(stop["signum"], _stopped(stop["signum"], ckpt, epoch, 0))

    summary = {
        "config": config.to_dict(),
        **mio.summarize(history),
        "wall_seconds": round(time.perf_counter() - start_wall, 3),
        "compile_seconds": round(compile_seconds, 3),
        "parameters": _count(state.params),
        "device": f"{mesh.size} x {jax.devices()[0].device_kind} ({jax.devices()[0].platform})",
        "processes": jax.process_count(),
        # Paths relative to the workdir (which is config["workdir"]): a summary names no folder
        # of the machine it ran on.
        "dataset_source": _relative_to(getattr(ds, "source", ds.name), workdir),
        "curves": "curves.png",
        "last_checkpoint_step": ckpt.latest_step(),
        "policy": speed.describe(),
    }
    if lead:
        write_or_stop(workdir / "summary.json", ckpt, lambda: mio.write_summary(workdir, summary))
    ckpt.close()
    return summary


def _epoch_table(rdata: Any, ds: Any, config: TrainConfig, epoch: int, mesh: Any) -> tuple:
    idx, mask = rdata.epoch_indices(
        ds.n_train, config.batch_size, seed=config.seed, epoch=epoch, shuffle=config.shuffle
    )
    sh = table_sharding(mesh)
    return put(np.asarray(idx, np.int32), sh), put(np.asarray(mask, bool), sh)


def _count(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def _stopped(signum: int, ckpt: Checkpointer, epoch: int, batch: int) -> str:
    name = signal.Signals(signum).name
    where = f"in epoch {epoch + 1} after batch {batch}" if batch else f"after epoch {epoch}"
    return (
        f"{name}: saved a checkpoint {where} in {ckpt.directory}; continue with the same "
        "command and --resume"
    )


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    val = ""
    if r["val_acc"] is not None:
        val = f" val_loss {r['val_loss']:.4f} val_acc {r['val_acc']:.4f}"
    return (
        f"epoch {r['epoch']}/{epochs} train_loss {r['train_loss']:.4f} "
        f"train_acc {r['train_acc']:.4f}{val} {r['seconds']:.1f} s "
        f"{r['images_per_s']:,.0f} img/s lr {r['lr']:.3g}"
    )


def _relative_to(source: str, workdir: pathlib.Path) -> str:
    """`source` relative to `workdir` when it is an absolute path; other sources as they are."""
    if not os.path.isabs(source):
        return source
    try:
        return os.path.relpath(source, workdir.absolute())
    except ValueError:  # another drive (Windows)
        return os.path.basename(source)
