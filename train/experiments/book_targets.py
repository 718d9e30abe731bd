"""The published CIFAR-2 figures of "Deep Learning with PyTorch", ch. 8 (1st edition notebook
`p1ch8/1_convolution.ipynb`, outputs dated 2020-01-16; see the project's REFERENCE.md)."""

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
