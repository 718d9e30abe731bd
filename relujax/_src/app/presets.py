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


@_register
def book_net() -> Preset:
    """The book's baseline Net (tanh), the only book run trained with shuffling.

    python -m train --preset book-net
    (= --model net --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64 --epochs 100
       --seed 123 --shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="net", shuffle=True)


@_register
def book_netwidth() -> Preset:
    """NetWidth (32/16 channels), unshuffled.

    python -m train --preset book-netwidth
    (= --model netwidth --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64 --epochs 100
       --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="netwidth")


@_register
def book_l2() -> Preset:
    """Net with 0.001 * sum(p**2) over all parameters added to the loss, unshuffled.

    python -m train --preset book-l2
    (= --model net --dataset cifar2 --optimizer sgd --lr 0.01 --l2 0.001 --batch-size 64
       --epochs 100 --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="net", l2=1e-3)


@_register
def book_dropout() -> Preset:
    """NetDropout (Dropout2d p=0.4), unshuffled, dropout left on at evaluation.

    python -m train --preset book-dropout
    (= --model netdropout --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64
       --epochs 100 --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="netdropout")


@_register
def book_batchnorm() -> Preset:
    """NetBatchNorm, unshuffled, evaluated with batch statistics.

    python -m train --preset book-batchnorm
    (= --model netbatchnorm --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64
       --epochs 100 --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="netbatchnorm")


@_register
def book_netdepth() -> Preset:
    """NetDepth (relu), unshuffled.

    python -m train --preset book-netdepth
    (= --model netdepth --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64 --epochs 100
       --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="netdepth")


@_register
def book_netres() -> Preset:
    """NetRes (one skip connection), unshuffled.

    python -m train --preset book-netres
    (= --model netres --dataset cifar2 --optimizer sgd --lr 0.01 --batch-size 64 --epochs 100
       --seed 123 --no-shuffle --no-augment --eval-mode train)
    """
    return dict(_BOOK, model="netres")


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


@_register
def improved_netwidth() -> Preset:
    """NetWidth trained well.

    python -m train --preset improved-netwidth  (flags as improved-net, --model netwidth)
    """
    return _improved("netwidth")


@_register
def improved_dropout() -> Preset:
    """NetDropout trained well, dropout off at evaluation.

    python -m train --preset improved-dropout  (flags as improved-net, --model netdropout)
    """
    return _improved("netdropout")


@_register
def improved_batchnorm() -> Preset:
    """NetBatchNorm trained well, evaluated with running statistics.

    python -m train --preset improved-batchnorm  (flags as improved-net, --model netbatchnorm)
    """
    return _improved("netbatchnorm")


@_register
def improved_netdepth() -> Preset:
    """NetDepth trained well.

    python -m train --preset improved-netdepth  (flags as improved-net, --model netdepth)
    """
    return _improved("netdepth")


@_register
def improved_netres() -> Preset:
    """NetRes trained well.

    python -m train --preset improved-netres  (flags as improved-net, --model netres)
    """
    return _improved("netres")


@_register
def improved_netresdeep() -> Preset:
    """NetResDeep with 100 independent blocks, trained well, at peak lr 0.01.

    python -m train --preset improved-netresdeep
    (flags as improved-net, --model netresdeep --model-kw n_blocks=100
     --model-kw shared_blocks=False --lr 0.01)

    lr 0.01, not 0.05: at 0.02 a 10-block run's 32 ReLUs after fc1 all died in epoch 4 and it
    fell to chance (docs/ACTIVATION_STUDY.md); at 0.01 the same run reached val 0.9365.
    """
    return _improved("netresdeep", lr=0.01, model_kwargs={"n_blocks": 100, "shared_blocks": False})


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
