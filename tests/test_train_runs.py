"""End-to-end runs of `python -m train` in subprocesses: resume bit-identity, multi-device.

The model has everything a resume must carry: BatchNorm statistics (NetResDeep's ResBlocks),
an RNG stream inside the model (RReLU draws its slopes in training) and momentum. The reference
run compiles first and fills a persistent compilation cache; the other runs then start
together, reusing it. (No augmentation here: with it this tiny net's training is chaotic
enough that 1- and 4-device runs drift apart by more than float tolerance within an epoch.)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.conftest import ROOT

RUN = [
    "--model", "netresdeep", "--model-kw", "n_blocks=2", "--model-kw", "n_chans1=8",
    "--activation", "rrelu", "--dataset", "synthetic", "--dataset-kw", "n_train=1200",
    "--dataset-kw", "n_test=200", "--batch-size", "16", "--lr", "0.02", "--optimizer",
    "momentum", "--no-augment", "--no-progress", "--log-every", "5", "--seed", "1",
]  # fmt: skip
EPOCHS = 3
TIMING = ("seconds", "images_per_s", "eval_seconds")


class Run:
    """A `python -m train` subprocess whose stderr is collected line by line."""

    def __init__(self, workdir, *extra, cache, env=None):
        cmd = [sys.executable, "-m", "train", *RUN, "--workdir", str(workdir), *extra]
        full_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        full_env.update(
            PYTHONUNBUFFERED="1",
            JAX_COMPILATION_CACHE_DIR=str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
            **(env or {}),
        )
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def signal_when(self, text, signum, timeout=300):
        """Sends `signum` as soon as a stderr line contains `text`."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}:\n" + "\n".join(self.lines))
            time.sleep(0.005)
        self.proc.send_signal(signum)

    def wait(self, timeout=400):
        out = self.proc.stdout.read()  # stderr belongs to the reader thread
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return self.proc.returncode, out, "\n".join(self.lines)


def metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(s).items() if k not in TIMING} for s in lines]


def final_arrays(workdir):
    from relujax.training import Checkpointer

    return Checkpointer(workdir / "checkpoints").arrays()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference; then the runs to interrupt and the 4-device run; then the resumes."""
    base = tmp_path_factory.mktemp("runs")
    w = {k: base / k for k in ("ref", "ref_xla", "term", "kill", "clean", "multi", "procs")}
    cache = base / "jax-cache"
    out = {"workdirs": w, "ref": Run(w["ref"], "--epochs", str(EPOCHS), cache=cache).wait()}
    # Several devices run XLA's convolutions (relujax's native CPU kernels are used in
    # single-device processes only); their single-device reference must too: the two agree
    # to ~1e-6 per step, but momentum SGD on this tiny BN net amplifies that over two epochs.
    ref_xla = Run(w["ref_xla"], "--epochs", "2", cache=cache, env={"RELUJAX_NATIVE": "0"})
    term = Run(w["term"], "--epochs", str(EPOCHS), cache=cache)
    kill = Run(w["kill"], "--epochs", str(EPOCHS), cache=cache)
    clean = Run(w["clean"], "--epochs", "1", cache=cache)
    multi = Run(
        w["multi"],
        "--epochs",
        "2",
        cache=cache,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    with socket.socket() as sock:  # a free port for the coordinator of two processes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [
        Run(
            w["procs"],
            "--epochs",
            "2",
            cache=base / f"jax-cache-{i}",
            env={
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    term.signal_when(f"epoch 2/{EPOCHS} batch 10/", signal.SIGTERM)
    kill.signal_when(f"epoch 2/{EPOCHS} batch 10/", signal.SIGKILL)
    out["first"] = {k: r.wait() for k, r in (("term", term), ("kill", kill), ("clean", clean))}
    resumed = {
        k: Run(w[k], "--epochs", str(EPOCHS), "--resume", cache=cache)
        for k in ("term", "kill", "clean")
    }
    out["ref_xla"] = ref_xla.wait()
    out["multi"] = multi.wait()
    out["procs"] = [p.wait() for p in procs]
    out["resumed"] = {k: r.wait() for k, r in resumed.items()}
    return out


def _assert_identical(runs, name):
    w = runs["workdirs"]
    rc, _, err = runs["resumed"][name]
    assert rc == 0, err
    assert "resuming" in err
    assert metrics(w[name]) == metrics(w["ref"])
    ref, got = final_arrays(w["ref"]), final_arrays(w[name])
    assert ref.keys() == got.keys()
    for path in ref:
        np.testing.assert_array_equal(got[path], ref[path], err_msg=path)


def test_reference_run_learns_and_writes_its_outputs(runs):
    w = runs["workdirs"]["ref"]
    rc, out, err = runs["ref"]
    assert rc == 0, err
    history = metrics(w)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_acc"] > 0.75, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(history[0]["dead_units"]) >= {"act1"}, history[0]["dead_units"]
    raw = json.loads((w / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s", "lr"):
        assert key in raw
    summary = json.loads((w / "summary.json").read_text())
    assert summary["final_val_acc"] == history[-1]["val_acc"]
    assert summary["config"]["model"] == "netresdeep"
    assert "cpu" in summary["device"]
    assert (w / "curves.png").stat().st_size > 1000
    assert '"final_val_acc"' in out and "curves.png" in out
    assert "batch 5/75" in err  # plain log lines when stderr is not a TTY


def test_resume_after_clean_stop_extends_the_run_bit_identically(runs):
    rc, _, err = runs["first"]["clean"]
    assert rc == 0, err
    _assert_identical(runs, "clean")


def test_resume_after_sigterm_is_bit_identical(runs):
    rc, _, err = runs["first"]["term"]
    assert rc == 128 + signal.SIGTERM, err
    assert "SIGTERM: saved a checkpoint" in err
    _assert_identical(runs, "term")


def test_resume_after_sigkill_is_bit_identical(runs):
    rc, _, _ = runs["first"]["kill"]
    assert rc == -signal.SIGKILL
    _assert_identical(runs, "kill")


def _assert_close_to_reference(runs, name, devices):
    """Metrics of two epochs, parameters after one (float noise grows in this tiny BN net)."""
    from relujax.training import Checkpointer

    w = runs["workdirs"]
    rc, out, err = runs[name] if name == "multi" else runs[name][0]
    assert rc == 0, err
    assert f"{devices} device(s)" in err
    assert runs["ref_xla"][0] == 0, runs["ref_xla"][2]
    ref, got = metrics(w["ref_xla"]), metrics(w[name])
    assert len(got) == 2
    for r, g in zip(ref, got, strict=True):
        for key in ("train_loss", "val_loss"):
            assert g[key] == pytest.approx(r[key], rel=1e-4), (key, r, g)
        for key in ("train_acc", "val_acc"):
            assert g[key] == pytest.approx(r[key], abs=2e-3), (key, r, g)
    steps = Checkpointer(w[name] / "checkpoints").steps()[0]  # epoch 1: before the drift grows
    a = Checkpointer(w["ref_xla"] / "checkpoints").arrays(steps)
    b = Checkpointer(w[name] / "checkpoints").arrays(steps)
    assert a.keys() == b.keys()
    for path in (p for p in a if p.startswith(("['params']", "['rest']"))):
        np.testing.assert_allclose(b[path], a[path], rtol=1e-3, atol=1e-4, err_msg=path)


def test_four_devices_match_one_device(runs):
    _assert_close_to_reference(runs, "multi", 4)


def test_two_processes_match_one(runs):
    """`jax.distributed` over loopback: two processes of one CPU device each."""
    rc, out, err = runs["procs"][1]
    assert rc == 0, err
    assert "final_val_acc" not in out and "epoch" not in err, "only process 0 reports"
    _assert_close_to_reference(runs, "procs", 2)
