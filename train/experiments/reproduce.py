"""Run a list of presets one after the other, each in its own workdir, resuming where it stopped.

    python -m train.experiments.reproduce --data-dir ../shared/data --out runs/repro \
        book-net book-netwidth book-l2 book-dropout book-batchnorm book-netdepth book-netres
    python -m train.experiments.report runs/repro --plot docs/reproduction.png

Every run is `python -m train --preset NAME --workdir OUT/NAME ...` in a subprocess, with
`--resume` when that workdir already holds a checkpoint, so an interrupted sweep continues where
it stopped. Extra flags after `--` go to every run (e.g. `-- --epochs 30`).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m train.experiments.reproduce", description=__doc__)
    p.add_argument("presets", nargs="+", help="preset names (see python -m train --list-presets)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/repro"))
    p.add_argument("--data-dir", help="passed to every run")
    a = p.parse_args(argv)
    failed = []
    for name in a.presets:
        workdir = a.out / name
        cmd = [sys.executable, "-m", "train", "--preset", name, "--workdir", str(workdir)]
        cmd += ["--no-progress"]
        if a.data_dir:
            cmd += ["--data-dir", a.data_dir]
        if (workdir / "checkpoints").is_dir():
            cmd.append("--resume")
        cmd += extra
        print("$", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"reproduce: {name} exited with {rc}", flush=True)
            failed.append(name)
    if failed:
        print("reproduce: failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
