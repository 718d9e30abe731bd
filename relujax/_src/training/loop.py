"""The training loop: epochs of jitted steps, evaluation, metrics, checkpoints, resume, signals.

`train` is a short sequence: build the run (`build.prepare_run`), start it fresh or from the
last good checkpoint (`_Job.start`), compile its steps ahead of time (`_Job.compile`), then for
each epoch train (`_Job.train_epoch`), evaluate when due (`_Job.evaluate`) and checkpoint and
write the metrics (`_Job.end_epoch`); `_Job.finish` writes the summary.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from relujax._src import allocator, policy
from relujax._src.data.sharding import put, replicated_sharding, table_sharding, to_host
from relujax._src.models._inputs import ModelInputError
from relujax._src.training import metrics as mio
from relujax._src.training.build import DTYPES, PreparedRun, RunState, prepare_run
from relujax._src.training.checkpoint import Checkpointer, CheckpointError
from relujax._src.training.config import ConfigError, TrainConfig
from relujax._src.training.guards import (
    Interrupted,
    NonFiniteLossError,
    WriteError,
    kept,
    stop_on_signals,
    stopped,
    why,
    write_or_stop,
)
from relujax._src.training.lock import WorkdirLock
from relujax._src.training.probe import DeadUnitProbe
from relujax._src.training.progress import Progress
from relujax._src.training.steps import zero_metrics

__all__ = ["Interrupted", "NonFiniteLossError", "train"]


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
        >>> cfg = TrainConfig(model="netdepth", dataset="synthetic", epochs=1, workdir="runs/rj")
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
    if dataset is None:
        try:
            dataset = rdata.load_dataset(config.dataset, config.data_dir, **config.dataset_kwargs)
        except TypeError as e:  # a --dataset-kw the dataset does not take
            raise ConfigError(f"--dataset-kw: {e}") from e
    run = prepare_run(config, dataset, model_fn=model_fn)
    speed = policy.current()  # what runs (relujax.policy), printed once and in summary.json
    log(f"speed policy: {speed}")
    job = _Job(run, progress, log, lead)
    job.start(resume)
    job.compile()
    start_wall = time.perf_counter()
    with stop_on_signals() as stop:
        while job.epoch < config.epochs:
            record = job.train_epoch(stop)
            if record["epoch"] % config.eval_every == 0 or record["epoch"] == config.epochs:
                record.update(job.evaluate())
            job.end_epoch(record, stop)
    return job.finish(speed, time.perf_counter() - start_wall)


class _Job:
    """One call of `train`: the run's state, its position (epoch, batch), its history, and the
    checkpointer, and the stages that advance them."""

    def __init__(
        self, run: PreparedRun, progress: Progress, log: Callable[[str], None], lead: bool
    ) -> None:
        from relujax import data as rdata

        self.run, self.config, self.state = run, run.config, run.state
        self.progress, self.log, self.lead = progress, log, lead
        self.workdir = pathlib.Path(self.config.workdir)
        self.rep = replicated_sharding(run.mesh)
        probe_gd = run.train_graphdef if self.config.eval_train_mode else run.eval_graphdef
        dtype = DTYPES[self.config.dtype]
        self.probe = DeadUnitProbe(probe_gd, rdata.get_batch, run.data, dtype, self.rep)
        self.ckpt = Checkpointer(
            self.workdir / "checkpoints", keep=self.config.keep_checkpoints, cleanup=True
        )
        self.epoch, self.batch, self.history, self.seconds_before = 0, 0, [], 0.0
        # XLA:CPU with several (virtual) devices can deadlock in the all-reduce of back-to-back
        # asynchronously dispatched steps when cores are few: the policy says when to wait.
        self.sync = policy.sync_each_step(run.mesh.size)

    def start(self, resume: bool) -> None:
        """Where to start: fresh, or from the last good checkpoint."""
        ckpt, workdir, log = self.ckpt, self.workdir, self.log
        if ckpt.steps() and not resume:
            raise ConfigError(
                f"--workdir {workdir} already holds checkpoints (steps {ckpt.steps()}); pass "
                "--resume to continue that run, or choose a new --workdir"
            )
        if not resume:
            return
        if not ckpt.steps():
            log(f"--resume: no checkpoint in {workdir}/checkpoints yet; starting from scratch")
            return
        config = self.config
        tree, meta = ckpt.restore(
            self.state.tree(), check_meta=lambda m: config.check_resumable(m["config"])
        )
        self.state = RunState.from_tree(tree)
        self.epoch, self.batch, self.history = meta["epoch"], meta["batch"], meta["history"]
        self.seconds_before = meta.get("epoch_seconds", 0.0)
        if ckpt.skipped:
            aside: list[pathlib.Path] = []
            for s, _ in ckpt.skipped if self.lead else []:  # its step must be written anew
                write_or_stop(
                    ckpt.directory / str(s), ckpt, lambda s=s: aside.append(ckpt.set_aside(s))
                )
            reasons = "; ".join(f"step {s}: {why}" for s, why in ckpt.skipped)
            moved = f", moved to {aside[0].parent}" if aside else ""
            log(f"--resume: skipped damaged checkpoint(s) ({reasons}){moved}")
        epoch, batch = self.epoch, self.batch
        where = f"epoch {epoch + 1} batch {batch}" if batch else f"the end of epoch {epoch}"
        step = epoch * self.run.steps_per_epoch + batch
        log(f"resuming {workdir} from {where} (checkpoint step {step})")
        if self.lead:
            history = self.history
            write_or_stop(
                workdir / "metrics.jsonl", ckpt, lambda: mio.write_metrics(workdir, history)
            )

    def compile(self) -> None:
        """Compiles both steps once, ahead of time: a mismatched call errors, not recompiles."""
        from relujax import data as rdata

        run, state, config = self.run, self.state, self.config
        eval_bs = config.eval_batch_size or config.batch_size
        n_test = run.dataset.n_test
        idx, mask = rdata.epoch_indices(n_test, eval_bs, seed=0, epoch=0, shuffle=False)
        sh = table_sharding(run.mesh)
        self.idx_eval, self.mask_eval = put(idx, sh), put(mask, sh)
        n = max(run.steps_per_epoch, self.idx_eval.shape[0])
        self.step_ids = [run.number(i) for i in range(n)]
        t0 = time.perf_counter()
        idx0, mask0 = run.epoch_table(0)
        first = self.step_ids[0]
        try:
            lowered = run.steps.train.lower(
                *state.tree().values(), *run.train_args(idx0, mask0), first, first
            )
        except ModelInputError as e:  # e.g. netdepth (32x32 RGB) on MNIST (28x28 grayscale)
            raise ConfigError(f"--model {config.model} on --dataset {run.dataset.name}: {e}") from e
        self.train_c = lowered.compile()
        self.eval_c = run.steps.evaluate.lower(
            *self._eval_args(state.rest, state.metrics), first
        ).compile()
        self.compile_seconds = time.perf_counter() - t0
        allocator.release_free_memory()  # the compiler's peak, kept by tcmalloc, not the run's
        ds = run.dataset
        self.log(
            f"model {config.model} ({_count(state.params):,} parameters) on {ds.name} "
            f"({ds.n_train} train / {ds.n_test} val), {run.mesh.size} device(s) "
            f"[{jax.devices()[0].platform}], compiled in {self.compile_seconds:.1f} s"
        )

    def _eval_args(self, rest: Any, metrics: Any) -> tuple[Any, ...]:
        d = self.run.data
        return (self.state.params, rest, metrics, d.x_test, d.y_test, self.idx_eval, self.mask_eval)

    def train_epoch(self, stop: dict[str, int]) -> dict[str, Any]:
        """Trains epoch `self.epoch` from batch `self.batch`; returns its metrics record.

        A signal saves a checkpoint after the current batch and raises Interrupted.
        """
        run, config, epoch = self.run, self.config, self.epoch
        nb = run.steps_per_epoch
        idx, mask = run.epoch_table(epoch)
        data = run.train_args(idx, mask)
        e_id = run.number(epoch)
        self.progress.start_epoch()
        t_epoch = time.perf_counter()
        for i in range(self.batch, nb):
            p, r, o, m = self.train_c(*self.state.tree().values(), *data, self.step_ids[i], e_id)
            self.state = RunState(p, r, o, m)
            if self.sync:
                jax.block_until_ready(m)
            at_log = config.log_every and (i + 1) % config.log_every == 0 and i + 1 < nb
            if at_log or "signum" in stop:
                loss, acc, n, finite = _read(self.state.metrics)
                if not finite:
                    raise self._diverged(epoch, i + 1)
                if at_log:
                    self.progress.update(epoch + 1, config.epochs, i + 1, nb, loss, acc, n)
            if "signum" in stop:
                self._save(epoch, i + 1, self.seconds_before + time.perf_counter() - t_epoch)
                raise stopped(stop["signum"], self.ckpt, epoch, i + 1)
        train_loss, train_acc, n, finite = _read(self.state.metrics)
        seconds = self.seconds_before + time.perf_counter() - t_epoch
        if not finite:
            raise self._diverged(epoch, nb)
        return {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": None,
            "val_acc": None,
            "seconds": round(seconds, 4),
            "images_per_s": round(n / max(seconds, 1e-9), 1),
            "lr": float(run.schedule((epoch + 1) * nb - 1)),
        }

    def evaluate(self) -> dict[str, Any]:
        """Evaluates on the test set: val_loss, val_acc and eval_seconds for the epoch record."""
        t_eval = time.perf_counter()
        r, m = self.state.rest, put(zero_metrics(), self.rep)
        for i in range(self.idx_eval.shape[0]):
            r, m = self.eval_c(*self._eval_args(r, m), self.step_ids[i])
            if self.sync:
                jax.block_until_ready(m)
        s = self.state
        self.state = RunState(s.params, r, s.opt_state, s.metrics)
        val_loss, val_acc, _, _ = _read(m)
        eval_seconds = round(time.perf_counter() - t_eval, 4)
        return {"val_loss": val_loss, "val_acc": val_acc, "eval_seconds": eval_seconds}

    def end_epoch(self, record: dict[str, Any], stop: dict[str, int]) -> None:
        """Records the epoch (with the dead-unit probe), checkpoints when due, writes
        metrics.jsonl and curves.png, logs the epoch line; a signal then raises Interrupted."""
        config, workdir, ckpt, history = self.config, self.workdir, self.ckpt, self.history
        s = self.state
        record["dead_units"] = self.probe(s.params, s.rest)
        history.append(record)
        last_epoch = record["epoch"] == config.epochs
        self.epoch, self.batch, self.seconds_before = record["epoch"], 0, 0.0
        self.state = RunState(s.params, s.rest, s.opt_state, put(zero_metrics(), self.rep))
        if self.epoch % config.checkpoint_every == 0 or last_epoch or "signum" in stop:
            self._save(self.epoch, 0, 0.0)
        if self.lead:
            write_or_stop(
                workdir / "metrics.jsonl", ckpt, lambda: mio.write_metrics(workdir, history)
            )
            write_or_stop(workdir / "curves.png", ckpt, lambda: mio.plot_curves(workdir, history))
        self.log(_epoch_line(record, config.epochs))
        if "signum" in stop and not last_epoch:
            raise stopped(stop["signum"], ckpt, self.epoch, 0)

    def finish(self, speed: policy.Policy, wall_seconds: float) -> dict[str, Any]:
        """Writes summary.json, closes the checkpointer and returns the summary."""
        run, workdir, ds = self.run, self.workdir, self.run.dataset
        device = jax.devices()[0]
        summary = {
            "config": self.config.to_dict(),
            **mio.summarize(self.history),
            "wall_seconds": round(wall_seconds, 3),
            "compile_seconds": round(self.compile_seconds, 3),
            "parameters": _count(self.state.params),
            "device": f"{run.mesh.size} x {device.device_kind} ({device.platform})",
            "processes": jax.process_count(),
            # Paths relative to the workdir (which is config["workdir"]): a summary names no
            # folder of the machine it ran on.
            "dataset_source": _relative_to(getattr(ds, "source", ds.name), workdir),
            "curves": "curves.png",
            "last_checkpoint_step": self.ckpt.latest_step(),
            "policy": speed.describe(),
        }
        if self.lead:
            write_or_stop(
                workdir / "summary.json", self.ckpt, lambda: mio.write_summary(workdir, summary)
            )
        self.ckpt.close()
        return summary

    def _save(self, epoch: int, batch: int, seconds: float) -> None:
        meta = {
            "config": self.config.to_dict(),
            "epoch": epoch,
            "batch": batch,
            "history": self.history,
            "epoch_seconds": seconds,
        }
        step = epoch * self.run.steps_per_epoch + batch
        try:
            self.ckpt.save(step, self.state.tree(), meta)
        except CheckpointError:
            raise
        except Exception as e:  # orbax/tensorstore wrap the OSError of a full or read-only disk
            raise WriteError(
                f"could not write checkpoint {step} in {self.ckpt.directory} ({why(e)}); "
                f"stopped. {kept(self.ckpt)}"
            ) from e

    def _diverged(self, epoch: int, batch: int) -> NonFiniteLossError:
        last = self.ckpt.latest_step()
        where = (
            f"the last good checkpoint is step {last} in {self.ckpt.directory}"
            if last
            else "no checkpoint was written yet"
        )
        hint = " or --dtype float32" if self.config.dtype != "float32" else ""
        return NonFiniteLossError(
            f"the training loss became non-finite in epoch {epoch + 1} (by batch {batch}); "
            f"stopped, {where}. Try a lower --lr{hint}."
        )


def _read(m: dict[str, jax.Array]) -> tuple[float, float, int, bool]:
    h = {k: to_host(v) for k, v in m.items()}
    n = int(h["count"])
    return float(h["loss_sum"]) / max(n, 1), int(h["correct"]) / max(n, 1), n, bool(h["finite"])


def _count(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


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
