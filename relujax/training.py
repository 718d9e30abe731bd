"""Reusable training pieces: config, optimizer, jitted steps, checkpoints, metrics, sharding.

`python -m train` (the `train/` application) is built from these; use them to train a relujax
model in your own loop.

Example:
    >>> from relujax.training import TrainConfig
    >>> TrainConfig(model="resnet20", optimizer="momentum", lr=0.1).schedule
    'constant'
"""

from relujax._src.extras import require as _require

_require("relujax.training", "train", "flax", "optax", "orbax.checkpoint", "matplotlib", "rich")

from relujax._src.data.sharding import (
    maybe_initialize_distributed as maybe_initialize_distributed,
)
from relujax._src.training.build import PreparedRun as PreparedRun
from relujax._src.training.build import prepare_run as prepare_run
from relujax._src.training.checkpoint import Checkpointer as Checkpointer
from relujax._src.training.checkpoint import CheckpointError as CheckpointError
from relujax._src.training.config import ConfigError as ConfigError
from relujax._src.training.config import TrainConfig as TrainConfig
from relujax._src.training.guards import Interrupted as Interrupted
from relujax._src.training.guards import NonFiniteLossError as NonFiniteLossError
from relujax._src.training.guards import WriteError as WriteError
from relujax._src.training.loop import train as train
from relujax._src.training.metrics import plot_curves as plot_curves
from relujax._src.training.metrics import read_metrics as read_metrics
from relujax._src.training.metrics import summarize as summarize
from relujax._src.training.metrics import write_metrics as write_metrics
from relujax._src.training.metrics import write_summary as write_summary
from relujax._src.training.optim import decay_mask as decay_mask
from relujax._src.training.optim import make_optimizer as make_optimizer
from relujax._src.training.optim import make_schedule as make_schedule
from relujax._src.training.steps import StepFns as StepFns
from relujax._src.training.steps import cross_entropy as cross_entropy
from relujax._src.training.steps import l2_penalty as l2_penalty
from relujax._src.training.steps import make_steps as make_steps
from relujax._src.training.steps import zero_metrics as zero_metrics

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "Interrupted",
    "NonFiniteLossError",
    "PreparedRun",
    "StepFns",
    "TrainConfig",
    "WriteError",
    "cross_entropy",
    "decay_mask",
    "l2_penalty",
    "make_optimizer",
    "make_schedule",
    "make_steps",
    "maybe_initialize_distributed",
    "plot_curves",
    "prepare_run",
    "read_metrics",
    "summarize",
    "train",
    "write_metrics",
    "write_summary",
    "zero_metrics",
]
