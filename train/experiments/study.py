"""The activation study: one model trained with several activations under the same recipe.

    python -m train.experiments.study --data-dir DATA --out runs/study \
        --models netres netresdeep:10 \
        --activations relu leaky_relu prelu rrelu elu selu gelu silu --seeds 0 -- --epochs 15
    python -m train.experiments.study_report runs/study --out docs/study

A model is `netres` (the `improved-netres` preset) or `netresdeep:N` (the `improved-netresdeep`
preset with N independent blocks). Every run is `python -m train --preset improved-<model>
--activation A --seed S --workdir OUT/<model>-<A>-s<S> --no-progress` in a subprocess; flags
after `--` go to every run (the study above shortens the recipe to 15 epochs). A run whose
`summary.json` exists is skipped, one with a checkpoint resumes, so an interrupted study goes on
where it stopped. Each epoch's `metrics.jsonl` line holds the dead-unit fractions per activation
layer (`dead_units`), which `study_report` plots.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from train.experiments._runs import run_train, split_passthrough

STUDY_ACTIVATIONS = ("relu", "leaky_relu", "prelu", "rrelu", "elu", "selu", "gelu", "silu")


def run_name(model: str, activation: str, seed: int) -> str:
    """The run folder of one (model, activation, seed): ``netresdeep10-gelu-s0``."""
    return f"{model.replace(':', '')}-{activation}-s{seed}"


def run_command(model: str, activation: str, seed: int, workdir: pathlib.Path) -> list[str]:
    """The `python -m train` command line of one run (without --data-dir/--resume/extras)."""
    base, _, blocks = model.partition(":")
    if base not in ("netres", "netresdeep") or (blocks and not blocks.isdigit()):
        raise SystemExit(
            f"study: error: --models: expected 'netres' or 'netresdeep:N', got {model!r}"
        )
    cmd = [sys.executable, "-m", "train", "--preset", f"improved-{base}"]
    if base == "netresdeep" and blocks:
        cmd += ["--model-kw", f"n_blocks={int(blocks)}"]
    cmd += ["--activation", activation, "--seed", str(seed), "--workdir", str(workdir)]
    return cmd + ["--no-progress"]


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="python -m train.experiments.study", description=__doc__)
    p.add_argument("--models", nargs="+", default=["netres", "netresdeep:10"])
    p.add_argument("--activations", nargs="+", default=list(STUDY_ACTIVATIONS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/study"))
    p.add_argument("--data-dir", help="passed to every run")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args(argv)
    failed = []
    for seed in a.seeds:
        for model in a.models:
            for act in a.activations:
                workdir = a.out / run_name(model, act, seed)
                if (workdir / "summary.json").exists():
                    print(f"study: {workdir.name} done, skipped", flush=True)
                    continue
                cmd = run_command(model, act, seed, workdir)
                rc = run_train(cmd, workdir, data_dir=a.data_dir, extra=extra, dry_run=a.dry_run)
                if rc != 0:
                    print(f"study: {workdir.name} exited with {rc}", flush=True)
                    failed.append(workdir.name)
    if failed:
        print("study: failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
