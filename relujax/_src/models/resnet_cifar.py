"""He et al. (2015) CIFAR ResNets: resnet20/32/44/56/110 with option-A (identity) shortcuts.

Layout (sec. 4.2 of the paper): conv3x3(3, 16) -> BN -> act, then three stages of ``n`` basic
blocks with 16/32/64 channels (stride 2 at the start of stages 2 and 3), global average pool, fc.
Depth = 6n + 2. Option-A shortcut: where the shape changes, the identity is subsampled
(``x[:, ::2, ::2]``) and zero-padded with ``planes // 4`` channels on each side (no parameters).
He init: Kaiming-normal (fan_in) conv and linear kernels, BN scale 1 and bias 0. PyTorch names:
``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}, linear``. ``model(x, mask=m)`` passes the
row mask of a padded batch to every BatchNorm (training-mode statistics over real rows only).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src.models._inputs import check_images
from relujax._src.models.layers import BatchNorm, Dtype, conv, kaiming_normal, linear
from relujax._src.models.monitor import ActivationLike, activation_factory
from relujax._src.models.stack import BlockStack


class BasicBlockA(nnx.Module):
    """``act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x))`` with an option-A shortcut."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        make_act = activation_factory(activation, "relu", where="BasicBlockA")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        he = kaiming_normal("fan_in")
        self.conv1 = conv(in_planes, planes, 3, stride=stride, use_bias=False, kernel_init=he, **kw)
        self.bn1 = BatchNorm(planes, **kw)
        self.act1 = make_act(rngs)
        self.conv2 = conv(planes, planes, 3, use_bias=False, kernel_init=he, **kw)
        self.bn2 = BatchNorm(planes, **kw)
        self.act2 = make_act(rngs)
        self.stride = stride
        self.pad = (planes - in_planes) // 2 if (stride != 1 or in_planes != planes) else 0
        self.project = stride != 1 or in_planes != planes

    def shortcut(self, x: jax.Array) -> jax.Array:
        if not self.project:
            return x
        x = x[:, :: self.stride, :: self.stride, :]
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (self.pad, self.pad)))

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        out = self.act1(self.bn1(self.conv1(x), mask=mask))
        out = self.bn2(self.conv2(out), mask=mask)
        return self.act2(out + self.shortcut(x))


class Stage(nnx.Module):
    """One stage: a first block (may change shape) then a stack of identical blocks.

    PyTorch index 0 is ``first``; ``rest`` holds indices 1, 2, ... (``relujax.interop``).
    """

    def __init__(self, first: nnx.Module, rest: list[nnx.Module], *, scan: bool | None):
        self.first = first
        self.rest = BlockStack(rest, scan=scan, torch_offset=1) if rest else nnx.data(None)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        kw = {} if mask is None else {"mask": mask}
        x = self.first(x, **kw)
        return self.rest(x, **kw) if self.rest is not None else x


class CifarResNet(nnx.Module):
    """The CIFAR ResNet of depth ``6 * n + 2``; use ``resnet20`` ... ``resnet110``.

    ``scan_blocks``: see ``NetResDeep`` (``None``: unrolled on CPU, scanned elsewhere).
    ``model(x, mask=m)``: BatchNorm statistics in training mode from the rows where the bool
    ``(N,)`` mask ``m`` is True only (a padded last batch); see ``BatchNorm``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import resnet20
      >>> resnet20(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        *,
        scan_blocks: bool | None = None,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CifarResNet: depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth!r}."
            )
        n = (depth - 2) // 6
        self.depth = depth
        make_act = activation_factory(activation, "relu", where="CifarResNet")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        he = kaiming_normal("fan_in")
        self.dtype = dtype
        self.conv1 = conv(3, 16, 3, use_bias=False, kernel_init=he, **kw)
        self.bn1 = BatchNorm(16, **kw)
        self.act1 = make_act(rngs)
        block = partial(BasicBlockA, activation=activation, **kw)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            stride = 1 if i == 0 else 2
            first = block(in_planes, planes, stride)
            rest = [block(planes, planes, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", Stage(first, rest, scan=scan_blocks))
            in_planes = planes
        self.linear = linear(64, num_classes, kernel_init=he, **kw)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        check_images(f"resnet{self.depth}", x)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        out = self.act1(self.bn1(self.conv1(x), mask=mask))
        for stage in (self.layer1, self.layer2, self.layer3):
            out = stage(out, mask=mask)
        return self.linear(jnp.mean(out, axis=(1, 2)))


def _factory(depth: int):
    def make(
        num_classes: int = 10,
        *,
        scan_blocks: bool | None = None,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> CifarResNet:
        return CifarResNet(
            depth,
            num_classes,
            scan_blocks=scan_blocks,
            activation=activation,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    make.__name__ = make.__qualname__ = f"resnet{depth}"
    make.__doc__ = (
        f"He et al.'s CIFAR ResNet-{depth} (option-A shortcuts); see :class:`CifarResNet`.\n\n"
        "  Example:\n"
        "    >>> import jax.numpy as jnp\n"
        "    >>> from flax import nnx\n"
        f"    >>> from relujax.models import resnet{depth}\n"
        f"    >>> resnet{depth}(rngs=nnx.Rngs(0))(jnp.ones((1, 32, 32, 3))).shape\n"
        "    (1, 10)\n"
    )
    return make


resnet20 = _factory(20)
resnet32 = _factory(32)
resnet44 = _factory(44)
resnet56 = _factory(56)
resnet110 = _factory(110)
