"""`python -m train`: command-line parsing, default dataset resolution, exit codes.

Exit codes: 0 done; 1 the loss diverged (the last good checkpoint is kept); 2 bad flags, data or
resume, a workdir in use by another run, or no checkpoint that verifies (one line on stderr, no
traceback); 3 an output could not be written (disk full, read-only filesystem: the last good
checkpoint is kept, rerun with --resume once there is room); 128 + signal number after
SIGINT/SIGTERM (a checkpoint was saved: rerun with --resume).

Every flag is checked before any data is looked for, so a typo costs no download.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import pathlib
import sys
import time
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from relujax._src.app.presets import PRESETS, resolve
from relujax.training import ConfigError, TrainConfig

_DEFAULTS = TrainConfig()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one readable line, exit 2
        self.exit(2, f"train: error: {message} (see {self.prog} --help)\n")


def _prog() -> str:
    """The command as the user typed it, for usage and error lines."""
    launched = pathlib.PurePath(sys.argv[0] if sys.argv and sys.argv[0] else "")
    if launched.name == "__main__.py" and launched.parent.name == "train":
        return "python -m train"  # a checkout's shortcut
    if launched.name == "train.py" and launched.parent.name == "relujax":
        return "python -m relujax.train"
    return "relujax-train"


def _flag_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that are flags (declared with `_flag` in config.py), in order."""
    return [f for f in dataclasses.fields(TrainConfig) if "group" in f.metadata]


# Flags that are not TrainConfig fields, added right after the field they belong with.
_APP_FLAGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "preset": [("--list-presets", {"action": "store_true", "help": "print the presets and exit"})],
    "workdir": [
        (
            "--resume",
            {
                "action": "store_true",
                "help": "continue from the last checkpoint in --workdir (or the newest default "
                "workdir)",
            },
        )
    ],
}


def _argument(f: dataclasses.Field, kind: Any) -> tuple[str, dict[str, Any]]:
    """The flag of field `f` (of type `kind`) and its `add_argument` keywords.

    Every default is None, so that the --preset (else TrainConfig) decides; the help states
    TrainConfig's default.
    """
    meta = f.metadata
    flag = _flag_name(f)
    default = getattr(_DEFAULTS, f.name)
    kw: dict[str, Any] = {"dest": f.name}
    if "values" in meta:  # a flag word per value: --eval-mode train
        kw["choices"] = tuple(meta["values"])
        shown = next(k for k, v in meta["values"].items() if v == default)
    elif kind is bool:
        kw["action"] = argparse.BooleanOptionalAction
        shown = "on" if default else "off"
    elif kind is Mapping:
        kw.update(action="append", metavar="KEY=VALUE")
        shown = None
    else:
        kw["type"] = kind if kind in (int, float) else None
        kw["choices"] = meta.get("choices")
        shown = None if default is None else f"{default:g}" if kind is float else str(default)
    shown = meta.get("shown", shown)
    text = meta["help"].replace("%", "%%")
    if shown is not None:  # "(0: per epoch)" -> "(0: per epoch; default 50)"
        text = (
            f"{text[:-1]}; default {shown})" if text.endswith(")") else f"{text} (default {shown})"
        )
    kw["help"] = text
    return flag, kw


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _kind(annotation: Any) -> Any:
    """int, float, str, bool or Mapping from a field's type (`X | None` is X)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
    return typing.get_origin(annotation) or annotation


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m train`: a flag per TrainConfig field declared with
    `_flag`, grouped as declared, plus --list-presets and --resume."""
    p = _Parser(
        prog=_prog(),
        description=(
            f"Train a relujax model. With no flags: {_DEFAULTS.model} on CIFAR-2 for "
            f"{_DEFAULTS.epochs} epochs when CIFAR is in the data folder, else on the built-in "
            "synthetic set. Flags override the --preset's values."
        ),
        epilog=(
            "presets: " + ", ".join(sorted(PRESETS)) + ". "
            "Outputs in --workdir: metrics.jsonl, summary.json, curves.png, checkpoints/. "
            "Exit codes: 0 ok, 1 loss diverged, 2 bad flags/data/workdir, 3 could not write "
            "(disk full or read-only; last checkpoint kept), 130/143 interrupted (checkpoint "
            "saved; continue with --resume)."
        ),
    )
    hints = typing.get_type_hints(TrainConfig)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in _flag_fields():
        group = f.metadata["group"]
        g = groups.get(group) or groups.setdefault(group, p.add_argument_group(group))
        flag, kw = _argument(f, _kind(hints[f.name]))
        g.add_argument(flag, **kw)
        for extra, extra_kw in _APP_FLAGS.get(f.name, []):
            g.add_argument(extra, **extra_kw)
    return p


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields from `args`: the preset's, then the flags that were given."""
    fields: dict[str, Any] = resolve(args.preset) if args.preset else {}
    for f in _flag_fields():
        value = getattr(args, f.name)
        if value is None:
            continue
        if "values" in f.metadata:
            value = f.metadata["values"][value]
        elif isinstance(value, list):  # the KEY=VALUE items of --model-kw or --dataset-kw
            value = {**fields.get(f.name, {}), **_parse_kw(value, _flag_name(f))}
        fields[f.name] = value
    return fields


def _parse_kw(items: Sequence[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"{flag}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def check_flags(fields: dict[str, Any]) -> None:
    """ConfigError for any flag that cannot work, before data is looked for or loaded.

    Validates the TrainConfig fields, the dataset name, and the model with its activation and
    --model-kw by building it abstractly (`nnx.eval_shape`: no parameters are allocated).
    """
    from flax import nnx

    from relujax import data as rdata
    from relujax import models
    from relujax.training import ConfigError, TrainConfig

    probe = {"dataset": "cifar2", "workdir": "runs/check", **fields}
    config = TrainConfig(**probe)
    name = config.dataset.strip().lower()
    if name not in rdata.DATASETS and not name.startswith("npz:"):
        raise ConfigError(
            f"--dataset: unknown dataset {config.dataset!r}; expected one of {list(rdata.DATASETS)}"
        )
    if config.model.lower() not in models.MODELS:
        raise ConfigError(
            f"--model: unknown model {config.model!r}; expected one of {sorted(models.MODELS)}"
        )
    kwargs = dict(config.model_kwargs)
    if config.activation is not None:
        kwargs["activation"] = config.activation
    if config.dtype != "float32":
        import jax.numpy as jnp

        kwargs["dtype"] = jnp.dtype(config.dtype)
    try:
        nnx.eval_shape(
            lambda: models.create_model(config.model.lower(), rngs=nnx.Rngs(0), **kwargs)
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--model {config.model}: {e}") from e


def check_workdir(workdir: str, resume: bool) -> None:
    """ConfigError when `workdir` cannot be this run's: a file, not writable, in use by another
    run (see relujax/_src/training/lock.py), or holding checkpoints without --resume."""
    from relujax._src.training.lock import WorkdirLock
    from relujax.training import ConfigError

    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--workdir {workdir}: is a file, not a folder; choose another --workdir")
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"--workdir {workdir}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {workdir}: {base} is not writable by this user")
    if not path.is_dir():
        return
    import jax

    if jax.process_index() == 0:  # the lead process holds the lock (loop.train); others share it
        WorkdirLock(path).acquire().release()  # WorkdirBusy: name the process that holds it
    ckpts = path / "checkpoints"
    steps = (
        sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []
    )
    if steps and not resume:
        raise ConfigError(
            f"--workdir {workdir} already holds checkpoints (steps {steps}); pass --resume to "
            "continue that run, or choose a new --workdir"
        )


def _default_workdir(fields: dict[str, Any], resume: bool) -> str:
    stem = fields.get("preset") or f"{fields.get('model', _DEFAULTS.model)}-{fields['dataset']}"
    runs = pathlib.Path("runs")
    if resume:
        found = sorted(runs.glob(f"{stem}-*"), key=lambda p: p.stat().st_mtime)
        if found:
            return str(found[-1])
    return str(runs / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def _default_dataset(fields: dict[str, Any], log: Any) -> Any:
    """CIFAR-2 from the data folder (or a download), else the synthetic set.

    The data folder is `--data-dir`, else `$RELUJAX_DATA`, else `~/.cache/relujax`
    (`relujax.data.load_dataset`'s rule): no other place is searched.
    """
    from relujax import data as rdata

    d = fields.get("data_dir")
    if d is None or pathlib.Path(d).is_dir():
        try:
            return rdata.load_dataset("cifar2", d, download=False), d
        except rdata.DataError:
            pass
    try:
        return rdata.load_dataset("cifar2", fields.get("data_dir"), download=True), None
    except (rdata.DataError, OSError):
        log(
            "train: CIFAR-10 not found in --data-dir, $RELUJAX_DATA or ~/.cache/relujax and not "
            "downloadable: training on the built-in synthetic set instead (get CIFAR with "
            "--data-dir DIR holding cifar-10-binary.tar.gz, or run once with network access)"
        )
        return rdata.load_dataset("synthetic"), None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `python -m train` with `argv`; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name in sorted(PRESETS):
            doc = (PRESETS[name].__doc__ or "").strip().splitlines()[0]
            print(f"{name:24s} {doc}")
        return 0

    def err(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import jax

    from relujax import data as rdata
    from relujax import training

    try:
        training.maybe_initialize_distributed()
        fields = config_fields(args)
        check_flags(fields)
        if "workdir" in fields:
            check_workdir(fields["workdir"], args.resume)
        dataset = None
        if "dataset" not in fields:
            dataset, found_in = _default_dataset(fields, err)
            fields["dataset"] = dataset.name
            if found_in is not None:
                fields.setdefault("data_dir", found_in)
        if "workdir" not in fields:
            fields["workdir"] = _default_workdir(fields, args.resume)
            check_workdir(fields["workdir"], args.resume)
        config = training.TrainConfig(**fields)
        summary = training.train(config, resume=args.resume, dataset=dataset)
    except training.NonFiniteLossError as e:
        err(f"train: {e}")
        return 1
    except training.WriteError as e:
        if os.environ.get("RELUJAX_DEBUG"):
            raise
        err(f"train: error: {e}")
        return 3
    except training.Interrupted as e:
        err(f"train: {e}")
        return 128 + e.signum
    except (training.ConfigError, training.CheckpointError, rdata.DataError) as e:
        if os.environ.get("RELUJAX_DEBUG"):
            raise
        err(f"train: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("train: interrupted before training started; nothing saved")
        return 130
    if jax.process_index() == 0:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    keys = (
        "epochs_done",
        "final_train_loss",
        "final_train_acc",
        "final_val_loss",
        "final_val_acc",
        "best_val_acc",
        "best_epoch",
        "train_seconds",
        "compile_seconds",
        "wall_seconds",
        "parameters",
        "device",
    )
    short = {k: summary[k] for k in keys if k in summary}
    print(json.dumps(short, indent=2))
    workdir = pathlib.Path(summary["config"]["workdir"])
    print(f"workdir: {workdir}  (metrics.jsonl, summary.json, checkpoints/)")
    print(f"curves:  {workdir / summary['curves']}")


__all__ = ["build_parser", "check_flags", "check_workdir", "config_fields", "main"]
