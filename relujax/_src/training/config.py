"""The run configuration of a training job: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
DTYPES = ("float32", "bfloat16")
DECAY_FILTERS = ("kernels", "all")


def _flag(default: Any, help: str, *, group: str, **cli: Any) -> Any:
    """A field that `python -m train` offers as a flag: `--name-with-dashes` unless `cli` says
    otherwise (`flag`, `choices`, `values` (flag word -> field value), `shown` (the default as
    the help states it)). relujax/_src/app/cli.py builds its parser from these."""
    metadata = {"help": help, "group": group, **cli}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_WHAT, _OPT, _RUN = "what to train", "optimisation", "run"

# Fields that may change between a run and its `--resume`: they do not alter the numbers a run
# computes (or, for `epochs`, only extend it). Every other field must match the checkpoint.
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "workdir",
        "data_dir",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "progress",
        "preset",
    }
)


class ConfigError(ValueError):
    """A training configuration that cannot run (bad value, or a resume that does not match)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; `python -m train` flags map onto these fields.

    Hyperparameters count in epochs and images; the optimizer works in steps of `batch_size`.
    Weight decay (`weight_decay`) is applied by the optimizer to the parameters that
    `decay_filter` selects: "kernels" (conv and linear kernels only: never biases, BatchNorm
    scales/offsets or PReLU slopes) or "all". `l2` instead adds `l2 * sum(p**2)` over every
    parameter to the loss, as the book's L2 example does.

    Example:
        >>> from relujax.training import TrainConfig
        >>> cfg = TrainConfig(model="netdepth", epochs=2, optimizer="momentum", lr=0.05)
        >>> cfg.replace(epochs=4).epochs
        4
    """

    preset: str | None = _flag(
        None, "a named setup (book-*, improved-*, resnet*-cifar10)", group=_WHAT
    )
    model: str = _flag("netdepth", "a model of relujax.models by lowercase name", group=_WHAT)
    activation: str | None = _flag(
        None,
        "an activation of relujax.nn by name, e.g. relu or prelu",
        group=_WHAT,
        shown="the model's own",
    )
    model_kwargs: Mapping[str, Any] = _flag(
        {},
        "extra model argument, e.g. n_blocks=10 (repeatable; VALUE is a Python literal)",
        group=_WHAT,
        flag="--model-kw",
    )
    dataset: str = _flag(
        "cifar2",
        "cifar2, cifar10, mnist, synthetic or npz:PATH",
        group=_WHAT,
        shown="cifar2 when found, else synthetic",
    )
    dataset_kwargs: Mapping[str, Any] = _flag(
        {},
        "extra dataset argument, e.g. n_train=512 for synthetic (repeatable)",
        group=_WHAT,
        flag="--dataset-kw",
    )
    data_dir: str | None = _flag(
        None, "folder with the data", group=_WHAT, shown="$RELUJAX_DATA, else ~/.cache/relujax"
    )
    dtype: str = _flag("float32", "computation dtype", group=_WHAT, choices=DTYPES)
    epochs: int = _flag(5, "passes over the training set", group=_OPT)
    batch_size: int = _flag(64, "images per step", group=_OPT)
    eval_batch_size: int | None = _flag(
        None, "images per evaluation step", group=_OPT, shown="--batch-size"
    )
    lr: float = _flag(1e-2, "(peak) learning rate", group=_OPT)
    optimizer: str = _flag(
        "momentum", "plain SGD, heavy-ball SGD, Adam or AdamW", group=_OPT, choices=OPTIMIZERS
    )
    momentum: float = _flag(0.9, "for --optimizer momentum", group=_OPT)
    nesterov: bool = _flag(False, "Nesterov momentum", group=_OPT)
    schedule: str = _flag(
        "constant",
        "step divides lr by 10 at 50% and 75% of the run",
        group=_OPT,
        choices=SCHEDULES,
    )
    warmup_epochs: float = _flag(0.0, "linear warm-up from 0, in epochs", group=_OPT)
    decay_at: tuple[float, ...] = (0.5, 0.75)
    weight_decay: float = _flag(0.0, "decay of the parameters --decay-filter picks", group=_OPT)
    decay_filter: str = _flag(
        "kernels",
        "conv and linear kernels only, or every parameter",
        group=_OPT,
        choices=DECAY_FILTERS,
    )
    l2: float = _flag(0.0, "add L2 * sum(p**2) to the loss (book-l2)", group=_OPT)
    augment: bool = _flag(False, "pad-4 crop + flip", group=_OPT)
    shuffle: bool = _flag(True, "reshuffle the training images every epoch", group=_OPT)
    eval_train_mode: bool = _flag(
        False,
        "model mode when evaluating (train: the book's batch statistics + dropout)",
        group=_OPT,
        flag="--eval-mode",
        values={"eval": False, "train": True},
    )
    seed: int = _flag(0, "model init, shuffling, augmentation", group=_OPT)
    workdir: str = _flag(
        "runs/default", "output folder", group=_RUN, shown="runs/<preset or model>-<time>"
    )
    eval_every: int = _flag(1, "epochs between evaluations", group=_RUN)
    checkpoint_every: int = _flag(1, "epochs between checkpoints", group=_RUN)
    keep_checkpoints: int = _flag(3, "checkpoints kept", group=_RUN)
    log_every: int = _flag(50, "batches between log lines (0: per epoch)", group=_RUN)
    progress: bool = _flag(True, "a progress bar; --no-progress: plain log lines", group=_RUN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        object.__setattr__(self, "dataset_kwargs", dict(self.dataset_kwargs))
        object.__setattr__(self, "decay_at", tuple(float(f) for f in self.decay_at))
        for f in dataclasses.fields(self):
            if "choices" in f.metadata:
                _check_choice(f.name, getattr(self, f.name), f.metadata["choices"])
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("log_every", self.log_every, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        if self.eval_batch_size is not None:
            _check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        if not (self.lr > 0.0 and self.lr < float("inf")):
            raise ConfigError(f"TrainConfig: lr must be a finite number > 0, got {self.lr!r}")
        for name in ("weight_decay", "l2", "warmup_epochs"):
            value = getattr(self, name)
            if not (value >= 0.0 and value < float("inf")):
                raise ConfigError(f"TrainConfig: {name} must be finite and >= 0, got {value!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"TrainConfig: momentum must be in [0, 1), got {self.momentum!r}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"TrainConfig: warmup_epochs ({self.warmup_epochs}) must not exceed "
                f"epochs ({self.epochs})"
            )
        if any(not 0.0 < f < 1.0 for f in self.decay_at):
            raise ConfigError(
                "TrainConfig: decay_at holds fractions of the run in (0, 1) where the step "
                f"schedule divides lr by 10, got {self.decay_at!r}"
            )
        if not self.model:
            raise ConfigError("TrainConfig: model must name a model of relujax.models, got ''")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        d = dataclasses.asdict(self)
        d["decay_at"] = list(self.decay_at)
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"TrainConfig.from_dict: unknown fields {unknown}")
        d = dict(d)
        if "decay_at" in d:
            d["decay_at"] = tuple(d["decay_at"])
        return cls(**d)

    def check_resumable(self, saved: Mapping[str, Any]) -> None:
        """Raises ConfigError when `saved` (a checkpoint's config) cannot be resumed as `self`."""
        mine = self.to_dict()
        diffs = [
            f"{k}: checkpoint has {saved.get(k)!r}, this run asks for {mine[k]!r}"
            for k in sorted(mine)
            if k not in RESUMABLE_FIELDS and saved.get(k) != mine[k]
        ]
        if diffs:
            raise ConfigError(
                "--resume: the checkpoint in the workdir was made with a different config ("
                + "; ".join(diffs)
                + "). Use the same flags, or a new --workdir."
            )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"TrainConfig: {name} must be one of {', '.join(choices)}; got {value!r}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"TrainConfig: {name} must be an integer >= {minimum}, got {value!r}")
