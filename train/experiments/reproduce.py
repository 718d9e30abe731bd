"""Run a list of presets one after the other, each in its own workdir, resuming where it stopped.

    python -m train.experiments.reproduce --data-dir DATA --out runs/repro \
        book-net book-netwidth book-l2 book-dropout book-batchnorm book-netdepth book-netres
    python -m train.experiments.report runs/repro --plot docs/reproduction.png

Every run is `python -m train --preset NAME --workdir OUT/NAME ...` in a subprocess, with
`--resume` when that workdir already holds a checkpoint, so an interrupted sweep continues where
it stopped. Extra flags after `--` go to every run (e.g. `-- --epochs 30`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from train.experiments._runs import run_train, split_passthrough


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="python -m train.experiments.reproduce", description=__doc__)
    p.add_argument("presets", nargs="+", help="preset names (see python -m train --list-presets)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/repro"))
    p.add_argument("--data-dir", help="passed to every run")
    a = p.parse_args(argv)
    failed = []
    for name in a.presets:
        workdir = a.out / name
        cmd = [sys.executable, "-m", "train", "--preset", name, "--workdir", str(workdir)]
        rc = run_train(cmd + ["--no-progress"], workdir, data_dir=a.data_dir, extra=extra)
        if rc != 0:
            print(f"reproduce: {name} exited with {rc}", flush=True)
            failed.append(name)
    if failed:
        print("reproduce: failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
