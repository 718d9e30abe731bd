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

    model: str = "netdepth"
    activation: str | None = None
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "cifar2"
    dataset_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_dir: str | None = None
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-2
    optimizer: str = "momentum"
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_at: tuple[float, ...] = (0.5, 0.75)
    weight_decay: float = 0.0
    decay_filter: str = "kernels"
    l2: float = 0.0
    augment: bool = False
    shuffle: bool = True
    eval_train_mode: bool = False
    seed: int = 0
    dtype: str = "float32"
    workdir: str = "runs/default"
    eval_every: int = 1
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    log_every: int = 50
    progress: bool = True
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        object.__setattr__(self, "dataset_kwargs", dict(self.dataset_kwargs))
        object.__setattr__(self, "decay_at", tuple(float(f) for f in self.decay_at))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("decay_filter", self.decay_filter, DECAY_FILTERS)
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
