"""SIGKILL fault injection for `python -m train`: kill at random moments, resume, compare.

Each round trains a tiny NetDepth on synthetic data in a fresh workdir, killing the process with
SIGKILL at random moments (45% aimed at the end of an epoch, where the evaluation, the checkpoint
write and the metrics write happen; 45% anywhere in training; 10% during start-up) and resuming
with `--resume` after each kill, until a run finishes. After every kill, metrics.jsonl must hold
whole lines of consecutive epochs; at the end, the final checkpoint's arrays and the metrics
(timings aside) must be bit-identical to those of an uninterrupted run. Rounds repeat until
`kills` kills have landed. The counts say where kills landed, including how many caught a
checkpoint or metrics write half done (its temporary folder or file left behind).

tests/test_faults.py drives a few kills; the longer mode is this script:

    python -m tests.kill_loop --kills 40 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
NB = 4  # batches per epoch: n_train / batch-size
EPOCHS = 3
RUN = [
    "--model", "netdepth", "--model-kw", "n_chans1=4", "--dataset", "synthetic",
    "--dataset-kw", f"n_train={32 * NB}", "--dataset-kw", "n_test=32", "--batch-size", "32",
    "--no-progress", "--log-every", "1", "--seed", "0", "--epochs", str(EPOCHS),
]  # fmt: skip
TIMING = ("seconds", "images_per_s", "eval_seconds")


class _Proc:
    """A `python -m train` subprocess whose stderr lines are collected as they come."""

    def __init__(self, workdir: pathlib.Path, cache: pathlib.Path, resume: bool) -> None:
        cmd = [sys.executable, "-m", "train", *RUN, "--workdir", str(workdir)]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env.update(
            PYTHONUNBUFFERED="1",
            JAX_COMPILATION_CACHE_DIR=str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            cmd + (["--resume"] if resume else []),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float) -> float | None:
        """Monotonic time of the first stderr line containing `text`; None if the run ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if text in line:
                    return t
            if self.proc.poll() is not None:
                return None
            time.sleep(0.002)
        raise TimeoutError(f"no {text!r} within {timeout} s:\n{self.text()}")

    def wait(self, timeout: float = 900) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return rc

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def read_metrics(workdir: pathlib.Path) -> list[dict]:
    """metrics.jsonl without timings; raises if a line is partial or epochs skip."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"partial last line in {path}: {text[-80:]!r}"
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)), rows
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def final_arrays(workdir: pathlib.Path) -> dict[str, np.ndarray]:
    from relujax.training import Checkpointer

    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        return ckpt.arrays()
    finally:
        ckpt.close()


def kill_loop(base: pathlib.Path, kills: int, seed: int = 0, log=print) -> dict:
    """Runs rounds until `kills` SIGKILLs have landed; returns counts. Raises on a mismatch."""
    rng = random.Random(seed)
    cache = base / "jax-cache"
    ref = base / "ref"
    t0 = time.monotonic()
    p = _Proc(ref, cache, resume=False)
    compiled = p.wait_for("compiled in", timeout=900)
    assert p.wait() == 0, p.text()
    train_s = max(time.monotonic() - (compiled or t0), 0.5)
    want_metrics, want_arrays = read_metrics(ref), final_arrays(ref)
    log(f"reference: {time.monotonic() - t0:.1f} s, training part {train_s:.1f} s")
    startup_s = max((compiled or t0) - p.start, 1.0)
    stats = dict.fromkeys(
        ("kills", "at_epoch_end", "in_training", "in_startup", "mid_checkpoint_write"), 0
    )
    stats.update(mid_metrics_write=0, runs=1, rounds=0)
    while stats["kills"] < kills:
        stats["rounds"] += 1
        work = base / f"round{stats['rounds']}"
        resume = False
        while True:
            p = _Proc(work, cache, resume=resume)
            stats["runs"] += 1
            landed = False
            if stats["kills"] < kills:
                u = rng.random()
                if u < 0.45:  # at the end of a random epoch: eval, checkpoint, metrics
                    e = rng.randint(min(len(read_metrics(work)) + 1, EPOCHS), EPOCHS)
                    seen = p.wait_for(f"epoch {e}/{EPOCHS} batch {NB - 1}/{NB}", timeout=900)
                    kind, delay = "at_epoch_end", rng.uniform(0.0, 0.6)
                elif u < 0.9:  # anywhere in the training part
                    seen = p.wait_for("compiled in", timeout=900)
                    kind, delay = "in_training", rng.uniform(0.0, train_s)
                else:  # during start-up (imports, data, restore, compilation)
                    seen = p.start
                    kind, delay = "in_startup", rng.uniform(0.0, startup_s)
                if seen is not None:
                    time.sleep(max(seen + delay - time.monotonic(), 0.0))
                    if p.proc.poll() is None:
                        p.proc.send_signal(signal.SIGKILL)
                        landed = True
            rc = p.wait()
            read_metrics(work)  # whole lines, consecutive epochs, after any kill
            if landed and rc == -signal.SIGKILL:
                stats["kills"] += 1
                stats[kind] += 1
                ckpts = work / "checkpoints"
                if ckpts.is_dir() and any("tmp" in c.name for c in ckpts.iterdir()):
                    stats["mid_checkpoint_write"] += 1  # orbax's unfinished temporary folder
                if any(f.name.startswith(".metrics.jsonl.tmp") for f in work.iterdir()):
                    stats["mid_metrics_write"] += 1
                resume = True
                continue
            assert rc == 0, f"rc {rc}:\n{p.text()}"
            break
        got_metrics, got_arrays = read_metrics(work), final_arrays(work)
        assert got_metrics == want_metrics, (got_metrics, want_metrics)
        assert got_arrays.keys() == want_arrays.keys()
        for k, v in want_arrays.items():
            np.testing.assert_array_equal(got_arrays[k], v, err_msg=f"round {stats['rounds']} {k}")
        log(f"round {stats['rounds']}: bit-identical; {stats}")
    stats["seconds"] = round(time.monotonic() - t0, 1)
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="default: a temporary folder")
    args = p.parse_args(argv)
    base = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="kill_loop-"))
    stats = kill_loop(base, args.kills, args.seed)
    print(json.dumps({"result": "bit-identical", **stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
