"""The published CIFAR-2 figures of "Deep Learning with PyTorch", ch. 8 (1st edition notebook
`p1ch8/1_convolution.ipynb`, outputs dated 2020-01-16; see the project's REFERENCE.md), and the
val-accuracy targets that the `improved-*` presets must reach."""

from __future__ import annotations

# preset -> (label, book params, book train acc, book val acc)
BOOK: dict[str, tuple[str, int, float, float]] = {
    "book-net": ("Net (tanh)", 18_090, 0.93, 0.89),
    "book-netwidth": ("NetWidth", 38_386, 0.96, 0.90),
    "book-l2": ("Net + L2", 18_090, 0.90, 0.87),
    "book-dropout": ("NetDropout", 38_386, 0.89, 0.88),
    "book-batchnorm": ("NetBatchNorm", 38_482, 1.00, 0.89),
    "book-netdepth": ("NetDepth", 16_130, 0.95, 0.90),
    "book-netres": ("NetRes", 16_130, 0.97, 0.90),
    "book-netresdeep": ("NetResDeep (100 shared)", 75_810, 0.97, 0.86),
}

# improved preset -> (label, the book preset it improves on, target val acc or None)
IMPROVED: dict[str, tuple[str, str, float | None]] = {
    "improved-net": ("Net (tanh), improved", "book-net", None),
    "improved-netwidth": ("NetWidth, improved", "book-netwidth", None),
    "improved-dropout": ("NetDropout, improved", "book-dropout", None),
    "improved-batchnorm": ("NetBatchNorm, improved", "book-batchnorm", None),
    "improved-netdepth": ("NetDepth, improved", "book-netdepth", 0.92),
    "improved-netres": ("NetRes, improved", "book-netres", 0.92),
    "improved-netresdeep": ("NetResDeep (100 independent), improved", "book-netresdeep", 0.93),
    # the same preset with --model-kw n_blocks=10 (workdir named so)
    "improved-netresdeep10": ("NetResDeep (10 independent), improved", "book-netresdeep", 0.93),
}


def targets(run: str) -> tuple[str, int | None, float | None, float | None, float | None]:
    """(label, book params, book train, book val, target val) of a run folder named after its
    preset; an improved run gets its book counterpart's figures. Unknown names: no figures."""
    if run in BOOK:
        return (*BOOK[run], None)
    if run in IMPROVED:
        label, book, target = IMPROVED[run]
        _, params, train, val = BOOK[book]
        return label, params, train, val, target
    return run, None, None, None, None
