"""Named training setups: `python -m train --preset NAME` (flags given as well override them).

`book-*` reproduce "Deep Learning with PyTorch" ch. 8 exactly, quirks included (see the
project's REFERENCE.md): CIFAR-2, plain SGD at lr 1e-2 (NetResDeep 3e-3), batch 64, 100 epochs,
seed 123, no shuffling after the baseline `Net`, evaluation with the model left in training mode
(batch statistics, dropout on; BatchNorm running statistics still updated, as under PyTorch's
`no_grad`), NetResDeep's 100 blocks sharing one set of weights, the L2 term in the loss for
`book-l2`, PyTorch's default initialisations (the models' defaults).

`improved-*` fix the quirks and train well: shuffling, augmentation (pad-4 crop + flip), eval
mode for evaluation, SGD with momentum 0.9, cosine schedule with a 2-epoch warm-up, weight decay
5e-4 on conv/linear kernels only (never biases, BatchNorm parameters or PReLU slopes), and
independent ResBlocks.

`resnet<N>-cifar10` follow He et al. 2015 (sec. 4.2): batch 128, SGD momentum 0.9, lr 0.1
divided by 10 at 50% and 75% of 182 epochs (their 32k/48k of 64k iterations), weight decay 1e-4
on every parameter, pad-4 crop + flip. They train on all 50k training images and validate on the
10k test images (He et al. held out 5k for validation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relujax.training import ConfigError

Preset = dict[str, Any]
PRESETS: dict[str, Callable[[], Preset]] = {}

_BOOK = dict(
    dataset="cifar2",
    optimizer="sgd",
    lr=1e-2,
    batch_size=64,
    epochs=100,
    seed=123,
    shuffle=False,
    augment=False,
    eval_train_mode=True,
    schedule="constant",
    weight_decay=0.0,
)
_IMPROVED = dict(
    dataset="cifar2",
    optimizer="momentum",
    momentum=0.9,
    lr=0.05,
    batch_size=64,
    epochs=40,
    seed=0,
    shuffle=True,
    augment=True,
    eval_train_mode=False,
    schedule="cosine",
    warmup_epochs=2.0,
    weight_decay=5e-4,
    decay_filter="kernels",
)


def _register(fn: Callable[[], Preset]) -> Callable[[], Preset]:
    PRESETS[fn.__name__.replace("_", "-")] = fn
    return fn


def _variants(
    family: str, build: Callable[[str], Preset], flags: str, *models: tuple[str, str]
) -> None:
    """Registers `family`-NAME = `build(model)` for each (model, summary) of `models`, with the
    docstring `summary` and the command, `flags` (with {model}) spelling out its flags.

    NAME is the model's name (netdropout and netbatchnorm: dropout and batchnorm)."""
    for model, summary in models:
        name = model.removeprefix("net") if model in ("netdropout", "netbatchnorm") else model

        def preset(model: str = model) -> Preset:
            return build(model)

        preset.__name__ = f"{family}_{name}"
        preset.__doc__ = f"""{summary}

    python -m train --preset {family}-{name}
    {flags.format(model=model)}
    """
        _register(preset)


@_register
def book_net() -> Preset:
    """The book's baseline Net (tanh), the only book run trained with shuffling.

    python -m train --preset book-net
    (= --model net --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64 --epochs 100
       --seed 123 --shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="net", shuffle=True)


@_register
def book_l2() -> Preset:
    """Net with 0.001 * sum(p**2) over all parameters added to the loss, unshuffled.

    python -m train --preset book-l2
    (= --model net --dataset cifar2 --optimizer sgd --lr 0.01 --l2 0.001 --batch-size 64
       --epochs 100 --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="net", l2=1e-3)


_variants(
    "book",
    lambda model: dict(_BOOK, model=model),
    "(= --model {model} --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64 --epochs 100\n"
    "       --seed 123 --no-shuffle --no-augment --eval-mode train)",
    ("netwidth", "NetWidth (32/16 channels), unshuffled."),
    ("netdropout", "NetDropout (Dropout2d p=0.4), unshuffled, dropout left on at evaluation."),
    ("netbatchnorm", "NetBatchNorm, unshuffled, evaluated with batch statistics."),
    ("netdepth", "NetDepth (relu), unshuffled."),
    ("netres", "NetRes (one skip connection), unshuffled."),
)


@_register
def book_netresdeep() -> Preset:
    """NetResDeep with 100 blocks that share ONE ResBlock (the book's bug), lr 3e-3, unshuffled.

    python -m train --preset book-netresdeep
    (= --model netresdeep --model-kw n_blocks=100 --model-kw shared_blocks=True --dataset cifar2
       --optimizer sgd --lr 0.003 --batch-size 64 --epochs 100 --seed 123 --no-shuffle
       --no-augment --eval-mode train)
    """
    return dict(
        _BOOK, model="netresdeep", lr=3e-3, model_kwargs={"n_blocks": 100, "shared_blocks": True}
    )


def _improved(model: str, **kw: Any) -> Preset:
    return dict(_IMPROVED, model=model, **kw)


@_register
def improved_net() -> Preset:
    """Net (tanh) trained well.

    python -m train --preset improved-net
    (= --model net --dataset cifar2 --optimizer momentum --lr 0.05 --schedule cosine
       --warmup-epochs 2 --weight-decay 5e-4 --batch-size 64 --epochs 40 --seed 0 --shuffle
       --augment --eval-mode eval)
    """
    return _improved("net")


_variants(
    "improved",
    _improved,
    "(flags as improved-net, --model {model})",
    ("netwidth", "NetWidth trained well."),
    ("netdropout", "NetDropout trained well, dropout off at evaluation."),
    ("netbatchnorm", "NetBatchNorm trained well, evaluated with running statistics."),
    ("netdepth", "NetDepth trained well."),
    ("netres", "NetRes trained well."),
)


@_register
def improved_netresdeep() -> Preset:
    """NetResDeep with 100 independent blocks and leaky ReLUs, trained well, at peak lr 0.01.

    python -m train --preset improved-netresdeep
    (flags as improved-net, --model netresdeep --model-kw n_blocks=100
     --model-kw shared_blocks=False --lr 0.01 --activation leaky_relu)

    leaky_relu (slope 0.01), not relu: with ReLUs the 32 units after fc1 die. At 100 blocks all
    32 were dead after the first epoch and the network fell to chance (val 0.5); at 10 blocks 30
    of 32 died and it still reached 0.9365 (docs/REPRODUCTION.md). A leaky unit keeps a gradient
    and cannot die (no dead channels in the activation study). lr 0.01, not 0.05: at 0.02 a
    10-block ReLU run lost all 32 in epoch 4 (docs/ACTIVATION_STUDY.md).
    """
    return _improved(
        "netresdeep",
        lr=0.01,
        activation="leaky_relu",
        model_kwargs={"n_blocks": 100, "shared_blocks": False},
    )


def _resnet(depth: int) -> Callable[[], Preset]:
    def preset() -> Preset:
        return dict(
            model=f"resnet{depth}",
            dataset="cifar10",
            optimizer="momentum",
            momentum=0.9,
            lr=0.1,
            batch_size=128,
            epochs=182,
            seed=0,
            shuffle=True,
            augment=True,
            eval_train_mode=False,
            schedule="step",
            decay_at=(0.5, 0.75),
            warmup_epochs=1.0 if depth >= 110 else 0.0,
            weight_decay=1e-4,
            decay_filter="all",
        )

    warm = " --warmup-epochs 1" if depth >= 110 else ""
    preset.__name__ = f"resnet{depth}_cifar10"
    preset.__doc__ = f"""ResNet-{depth} on CIFAR-10 after He et al. 2015.

    python -m train --preset resnet{depth}-cifar10
    (= --model resnet{depth} --dataset cifar10 --optimizer momentum --lr 0.1 --schedule step
       --weight-decay 1e-4 --decay-filter all --batch-size 128 --epochs 182 --shuffle --augment
       --eval-mode eval{warm})
    """
    return preset


for _depth in (20, 32, 44, 56, 110):
    PRESETS[f"resnet{_depth}-cifar10"] = _resnet(_depth)


def resolve(name: str) -> Preset:
    """The config fields of preset `name` (ConfigError naming the known ones otherwise).

    Example:
        >>> resolve("book-netresdeep")["lr"]
        0.003
    """
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return dict(PRESETS[name](), preset=name)
