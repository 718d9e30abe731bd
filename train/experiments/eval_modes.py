"""What the book's evaluation in training mode costs: one checkpoint, evaluated both ways.

    python -m train.experiments.eval_modes runs/repro/book-batchnorm runs/repro/book-dropout \
        --data-dir DATA --repeats 5

The book evaluates with the model left in training mode: BatchNorm normalises with the
statistics of each validation batch (and keeps updating its running statistics), Dropout keeps
dropping. For each finished run folder, this restores the last checkpoint and measures val
accuracy in training mode (`--repeats` times: dropout makes it random, and the running
statistics move) and in evaluation mode (running statistics, no dropout), with the run's own
batch size. Models without BatchNorm or Dropout give the same figure both ways (a check).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

import jax
import numpy as np


def evaluate_both(folder: pathlib.Path, data_dir: str | None, repeats: int) -> dict:
    """{'train_mode': [acc per repeat], 'eval_mode': acc, ...} for the run in `folder`.

    Both evaluations use the application's own evaluation step (`relujax.training.prepare_run`
    with `eval_train_mode` True and False), restored from the run's last checkpoint.
    """
    from relujax import data as rdata
    from relujax._src.data.sharding import put, replicated_sharding, table_sharding
    from relujax._src.training.build import RunState
    from relujax._src.training.checkpoint import Checkpointer
    from relujax._src.training.steps import zero_metrics
    from relujax.training import TrainConfig, prepare_run

    summary = json.loads((folder / "summary.json").read_text())
    config = TrainConfig.from_dict(summary["config"])
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    ds = rdata.load_dataset(config.dataset, config.data_dir, **config.dataset_kwargs)
    runs = {mode: prepare_run(config.replace(eval_train_mode=mode), ds) for mode in (True, False)}
    tree, meta = Checkpointer(folder / "checkpoints").restore(runs[True].state.tree())
    state = RunState.from_tree(tree)
    bs = config.eval_batch_size or config.batch_size
    idx, mask = rdata.epoch_indices(ds.n_test, bs, seed=0, epoch=0, shuffle=False)
    sh = table_sharding(runs[True].mesh)
    idx, mask = put(np.asarray(idx, np.int32), sh), put(np.asarray(mask, bool), sh)

    def accuracy(train_mode: bool, rest):
        run = runs[train_mode]
        metrics = put(zero_metrics(), replicated_sharding(run.mesh))
        d = run.data
        for i in range(idx.shape[0]):
            rest, metrics = run.steps.evaluate(
                state.params, rest, metrics, d.x_test, d.y_test, idx, mask, run.number(i)
            )
        return int(metrics["correct"]) / int(metrics["count"]), rest

    # Training mode: the dropout RNG (and BatchNorm's running statistics, unused there) advance
    # from one repeat to the next, as they would over further evaluations.
    rest, train_mode = jax.tree.map(lambda a: a.copy(), state.rest), []
    for _ in range(repeats):
        acc, rest = accuracy(True, rest)
        train_mode.append(acc)
    eval_acc, _ = accuracy(False, jax.tree.map(lambda a: a.copy(), state.rest))
    return {
        "run": folder.name,
        "epoch": meta["epoch"],
        "logged_val": meta["history"][-1].get("val_acc") if meta["history"] else None,
        "train_mode": train_mode,
        "eval_mode": eval_acc,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.experiments.eval_modes", description=__doc__)
    p.add_argument("runs", nargs="+", type=pathlib.Path, help="finished run folders")
    p.add_argument("--data-dir")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=pathlib.Path, help="write the results here too")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error(f"--repeats must be >= 1, got {a.repeats}")
    for f in a.runs:
        if not (f / "summary.json").exists() or not (f / "checkpoints").is_dir():
            p.error(f"{f}: not a finished run folder (needs summary.json and checkpoints/)")
    results = [evaluate_both(f, a.data_dir, a.repeats) for f in a.runs]
    print("| run | epoch | val, training mode (book) | val, eval mode | difference |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        tm = r["train_mode"]
        spread = f" ± {statistics.stdev(tm):.4f}" if len(tm) > 1 else ""
        mean = statistics.fmean(tm)
        print(
            f"| {r['run']} | {r['epoch']} | {mean:.4f}{spread} | {r['eval_mode']:.4f} "
            f"| {r['eval_mode'] - mean:+.4f} |"
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
