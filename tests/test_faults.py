"""Faults a run must survive: a busy workdir, a full or read-only disk, SIGKILL at any moment,
bad labels, a workdir that is a file, and flags checked before any data is looked for."""

import dataclasses
import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import orbax.checkpoint as ocp
import pytest

from relujax import data as rdata
from relujax._src.app import cli
from relujax._src.training import metrics as mio
from relujax._src.training.lock import WorkdirBusy, WorkdirLock
from relujax.training import Checkpointer, ConfigError, TrainConfig, WriteError, train
from tests import kill_loop

SMALL = [
    "--dataset", "synthetic", "--dataset-kw", "n_train=96", "--dataset-kw", "n_test=32",
    "--batch-size", "32", "--model-kw", "n_chans1=4", "--no-progress", "--log-every", "0",
]  # fmt: skip


def run_main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# One run per workdir.


def test_a_second_run_on_a_busy_workdir_exits_2_naming_the_holder(tmp_path, capsys):
    with WorkdirLock(tmp_path):
        code, _, err = run_main([*SMALL, "--workdir", str(tmp_path), "--resume"], capsys)
        assert code == 2
        line = _one_line(err)
        assert f"is in use by process {os.getpid()} on " in line, line
        cfg = TrainConfig(dataset="synthetic", workdir=str(tmp_path))
        with pytest.raises(WorkdirBusy, match=f"process {os.getpid()}"):
            train(cfg, dataset=object())  # refused before the dataset is touched
    WorkdirLock(tmp_path).acquire().release()  # released on exit


def test_the_lock_is_the_lead_process_alone(tmp_path, monkeypatch):
    """In a multi-process run the lead (process 0) holds the lock; the others' checks pass it."""
    import jax

    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirBusy):
            cli.check_workdir(str(tmp_path), resume=True)
        monkeypatch.setattr(jax, "process_index", lambda: 1)
        cli.check_workdir(str(tmp_path), resume=True)  # process 1 beside its lead: no error


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
    # A run's lock as the kernel sees it (plain fcntl: no jax import, so it starts fast).
    code = textwrap.dedent(f"""
        import fcntl, json, os, socket, sys, time
        fd = os.open({str(tmp_path / ".lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        info = {{"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}}
        os.write(fd, json.dumps(info).encode())
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusy, match=f"process {proc.pid}"):
            WorkdirLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert (tmp_path / ".lock").exists()  # the file stays; the lock died with the process
    WorkdirLock(tmp_path).acquire().release()
    cli.check_workdir(str(tmp_path), resume=True)


# Write failures: a full or read-only disk stops the run with exit 3, the last good
# checkpoint and whole files kept.


def test_a_full_disk_during_a_checkpoint_exits_3_keeping_the_last_good_one(
    tmp_path, capsys, monkeypatch
):
    real, calls = ocp.CheckpointManager.save, []

    def save(self, step, *a, **kw):
        calls.append(step)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, step, *a, **kw)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    w = tmp_path / "w"
    code, _, err = run_main([*SMALL, "--epochs", "2", "--workdir", str(w)], capsys)
    assert code == 3
    line = _last_line(err)
    assert line.startswith("train: error: could not write checkpoint 6 in "), line
    assert "No space left on device" in line and "last good checkpoint is step 3" in line
    assert Checkpointer(w / "checkpoints").steps() == [3]
    assert Checkpointer(w / "checkpoints").verify(3) is None
    assert [r["epoch"] for r in mio.read_metrics(w)] == [1]


def _last_line(err):
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_a_read_only_disk_at_the_summary_exits_3(tmp_path, capsys, monkeypatch):
    real = mio._atomic_write

    def atomic_write(path, data):
        if path.name == "summary.json":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, data)

    monkeypatch.setattr(mio, "_atomic_write", atomic_write)
    w = tmp_path / "w"
    code, out, err = run_main([*SMALL, "--epochs", "1", "--workdir", str(w)], capsys)
    assert code == 3 and out == ""
    line = _last_line(err)
    assert "could not write" in line and "summary.json" in line, line
    assert "Read-only file system" in line and "last good checkpoint is step 3" in line
    assert Checkpointer(w / "checkpoints").steps() == [3]


def test_a_failed_metrics_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    mio.write_metrics(tmp_path, [{"epoch": 1, "val_acc": 0.5}])
    before = (tmp_path / "metrics.jsonl").read_bytes()

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", replace)
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.6}]
    with pytest.raises(OSError, match="No space left"):
        mio.write_metrics(tmp_path, history)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no stray temp file
    from relujax._src.training.guards import write_or_stop

    ckpt = Checkpointer(tmp_path / "checkpoints")
    with pytest.raises(WriteError, match=r"metrics.jsonl \(No space left on device\); stopped"):
        write_or_stop(
            tmp_path / "metrics.jsonl", ckpt, lambda: mio.write_metrics(tmp_path, history)
        )


# SIGKILL at random moments, checkpoint writes included.


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """A few kills here; `python -m tests.kill_loop --kills N` (or RELUJAX_KILLS=N) for more."""
    kills = int(os.environ.get("RELUJAX_KILLS", "3"))
    stats = kill_loop.kill_loop(tmp_path, kills, seed=0, log=lambda s: None)
    assert stats["kills"] == kills


# Bad input found before training starts.


def test_labels_out_of_range_are_refused_before_training(tmp_path):
    ds = rdata.load_dataset("synthetic", n_train=64, n_test=32)
    y = np.array(ds.y_train)
    y[5] = 7
    bad = dataclasses.replace(ds, y_train=y)
    cfg = TrainConfig(dataset="synthetic", workdir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"y_train must hold integer labels in \[0, 2\).*got 7"):
        train(cfg, dataset=bad, model_fn=lambda *a: pytest.fail("model built"))
    bad = dataclasses.replace(ds, y_test=-np.ones_like(ds.y_test))
    with pytest.raises(ConfigError, match=r"y_test must hold .* got -1"):
        train(cfg, dataset=bad, model_fn=lambda *a: pytest.fail("model built"))


def test_a_workdir_that_is_a_file_exits_2_with_one_line(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    code, out, err = run_main([*SMALL, "--workdir", str(f)], capsys)
    assert code == 2 and out == ""
    assert (
        _one_line(err)
        == f"train: error: --workdir {f}: is a file, not a folder; choose another --workdir"
    )
    code, _, err = run_main([*SMALL, "--workdir", str(f / "sub")], capsys)
    assert code == 2 and f"{f} is a file, not a folder" in _one_line(err)
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        train(TrainConfig(dataset="synthetic", workdir=str(f)), dataset=object())


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--model", "nope"], "--model: unknown model 'nope'"),
        (["--activation", "swoosh"], "unknown activation name 'swoosh'"),
        (["--model-kw", "n_blocks=3"], "--model netdepth: "),
        (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
        (["--dataset", "imagenet"], "--dataset: unknown dataset 'imagenet'"),
        (["--dataset", "synthetic", "--dataset-kw", "colour=1"], "--dataset-kw: "),
    ],
)
def test_flags_are_checked_before_any_data_is_looked_for(
    argv, match, capsys, monkeypatch, tmp_path
):
    looked = []
    monkeypatch.setattr(cli, "_default_dataset", lambda *a: looked.append(a))
    code, out, err = run_main([*argv, "--workdir", str(tmp_path / "w")], capsys)
    assert code == 2 and out == "" and not looked
    line = _one_line(err)
    assert line.startswith("train: error: ") and match in line, line


def test_images_the_model_cannot_take_exit_2_before_compiling(tmp_path, capsys):
    argv = [*SMALL, "--dataset-kw", "image_size=28", "--workdir", str(tmp_path / "w")]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    # the speed policy's line may come first; the error is one line, the last
    line = err.strip().splitlines()[-1]
    assert line.startswith("train: error: --model netdepth on --dataset synthetic: NetDepth: "), (
        line
    )
    assert "expected images of shape (N, 32, 32, 3) (NHWC), got (32, 28, 28, 3)" in line, line
