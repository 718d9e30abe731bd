"""He et al. (2015) ImageNet ResNets 18/34/50, parameter for parameter torchvision's.

Layout and PyTorch names as torchvision: ``conv1`` 7x7/2 (no bias), ``bn1``, act, 3x3/2 max pool,
``layer1..4`` of basic (18, 34) or bottleneck (50; stride on the 3x3 conv, "v1.5") blocks with a
1x1-conv + BN projection shortcut (``downsample.0``, ``downsample.1``) where the shape changes,
global average pool, ``fc``. He init as torchvision: Kaiming-normal fan_out convs, BN 1/0, fc
PyTorch default. Inputs NHWC of any size >= 32 (224 for ImageNet). ``model(x, mask=m)`` passes
the row mask of a padded batch to every BatchNorm (training-mode statistics over real rows only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src.models._inputs import check_images
from relujax._src.models.layers import BatchNorm, Dtype, conv, kaiming_normal, linear, max_pool
from relujax._src.models.monitor import ActivationLike, activation_factory
from relujax._src.models.resnet_cifar import Stage

_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class _Block(nnx.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) block with projection shortcut."""

    def __init__(self, kind: str, in_planes: int, planes: int, stride: int, *, act, kw):
        he = kaiming_normal("fan_out")
        rngs = kw["rngs"]
        expansion = 4 if kind == "bottleneck" else 1
        out_planes = planes * expansion
        if kind == "basic":
            self.conv1 = conv(
                in_planes, planes, 3, stride=stride, use_bias=False, kernel_init=he, **kw
            )
            self.bn1 = BatchNorm(planes, **kw)
            self.act1 = act(rngs)
            self.conv2 = conv(planes, planes, 3, use_bias=False, kernel_init=he, **kw)
            self.bn2 = BatchNorm(planes, **kw)
        else:
            self.conv1 = conv(in_planes, planes, 1, use_bias=False, kernel_init=he, **kw)
            self.bn1 = BatchNorm(planes, **kw)
            self.act1 = act(rngs)
            self.conv2 = conv(
                planes, planes, 3, stride=stride, use_bias=False, kernel_init=he, **kw
            )
            self.bn2 = BatchNorm(planes, **kw)
            self.act2 = act(rngs)
            self.conv3 = conv(planes, out_planes, 1, use_bias=False, kernel_init=he, **kw)
            self.bn3 = BatchNorm(out_planes, **kw)
        self.act_out = act(rngs)
        self.kind = kind
        if stride != 1 or in_planes != out_planes:
            self.downsample = nnx.List(
                [
                    conv(
                        in_planes,
                        out_planes,
                        1,
                        stride=stride,
                        use_bias=False,
                        kernel_init=he,
                        **kw,
                    ),
                    BatchNorm(out_planes, **kw),
                ]
            )
        else:
            self.downsample = nnx.data(None)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        out = self.act1(self.bn1(self.conv1(x), mask=mask))
        out = self.bn2(self.conv2(out), mask=mask)
        if self.kind == "bottleneck":
            out = self.bn3(self.conv3(self.act2(out)), mask=mask)
        identity = x
        if self.downsample is not None:
            identity = self.downsample[1](self.downsample[0](x), mask=mask)
        return self.act_out(out + identity)


class ImageNetResNet(nnx.Module):
    """torchvision's ResNet-18/34/50 in NHWC; use ``resnet18``, ``resnet34``, ``resnet50``.

    Each stage is a first block then a stack of identical ones (``scan_blocks``: see
    ``NetResDeep``; ``None``: unrolled on CPU, scanned elsewhere). ``model(x, mask=m)``: BatchNorm
    statistics in training mode from the rows where the bool ``(N,)`` mask ``m`` is True only.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import resnet18
      >>> resnet18(num_classes=10, rngs=nnx.Rngs(0))(jnp.ones((1, 64, 64, 3))).shape
      (1, 10)
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 1000,
        *,
        scan_blocks: bool | None = None,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if depth not in _DEPTHS:
            raise ValueError(
                f"ImageNetResNet: depth must be one of {sorted(_DEPTHS)}, got {depth!r}."
            )
        kind, counts = _DEPTHS[depth]
        self.depth = depth
        act = activation_factory(activation, "relu", where="ImageNetResNet")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.conv1 = conv(
            3,
            64,
            7,
            stride=2,
            padding=3,
            use_bias=False,
            kernel_init=kaiming_normal("fan_out"),
            **kw,
        )
        self.bn1 = BatchNorm(64, **kw)
        self.act1 = act(rngs)
        in_planes = 64
        expansion = 4 if kind == "bottleneck" else 1
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_Block(kind, in_planes, planes, stride, act=act, kw=kw))
                in_planes = planes * expansion
            setattr(self, f"layer{i + 1}", Stage(blocks[0], blocks[1:], scan=scan_blocks))
        self.fc = linear(512 * expansion, num_classes, **kw)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        check_images(f"resnet{self.depth}", x)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        out = max_pool(self.act1(self.bn1(self.conv1(x), mask=mask)), 3, 2, padding=1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = stage(out, mask=mask)
        return self.fc(jnp.mean(out, axis=(1, 2)))


def _factory(depth: int):
    def make(
        num_classes: int = 1000,
        *,
        scan_blocks: bool | None = None,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> ImageNetResNet:
        return ImageNetResNet(
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
        f"torchvision's ResNet-{depth} in NHWC; see :class:`ImageNetResNet`.\n\n"
        "  Example:\n"
        "    >>> import jax.numpy as jnp\n"
        "    >>> from flax import nnx\n"
        f"    >>> from relujax.models import resnet{depth}\n"
        f"    >>> resnet{depth}(num_classes=10, rngs=nnx.Rngs(0))(jnp.ones((1, 32, 32, 3))).shape\n"
        "    (1, 10)\n"
    )
    return make


resnet18 = _factory(18)
resnet34 = _factory(34)
resnet50 = _factory(50)
