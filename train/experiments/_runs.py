"""What the sweep scripts share: flags after `--`, and running one resumable `python -m train`."""

from __future__ import annotations

import pathlib
import subprocess


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the script's own arguments, the flags after `--` meant for every run)."""
    if "--" not in argv:
        return list(argv), []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def run_train(
    cmd: list[str],
    workdir: pathlib.Path,
    *,
    data_dir: str | None,
    extra: list[str],
    dry_run: bool = False,
) -> int:
    """Runs `cmd` (a `python -m train ...` line) with --data-dir, --resume when `workdir` holds
    checkpoints, and `extra`; prints the command first. Returns the exit code (0 for a dry run)."""
    cmd = list(cmd)
    if data_dir:
        cmd += ["--data-dir", data_dir]
    if (workdir / "checkpoints").is_dir():
        cmd.append("--resume")
    cmd += extra
    print("$", " ".join(cmd), flush=True)
    return 0 if dry_run else subprocess.call(cmd)
