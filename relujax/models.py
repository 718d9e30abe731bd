"""The networks: the book's ch. 8 nets, ResBlock/NetResDeep, CIFAR and ImageNet ResNets.

All take NHWC inputs, return logits, take ``activation=`` and keyword-only ``rngs``, and switch
BatchNorm/Dropout/RReLU with ``model.train()`` / ``model.eval()``.
"""

from relujax._src.extras import require as _require

_require("relujax.models", "nn", "flax")

from relujax._src.models.book import MLP as MLP
from relujax._src.models.book import Net as Net
from relujax._src.models.book import NetBatchNorm as NetBatchNorm
from relujax._src.models.book import NetDepth as NetDepth
from relujax._src.models.book import NetDropout as NetDropout
from relujax._src.models.book import NetRes as NetRes
from relujax._src.models.book import NetWidth as NetWidth
from relujax._src.models.book import SimpleNN as SimpleNN
from relujax._src.models.layers import BatchNorm as BatchNorm
from relujax._src.models.monitor import Activation as Activation
from relujax._src.models.monitor import DeadUnitStats as DeadUnitStats
from relujax._src.models.monitor import dead_unit_stats as dead_unit_stats
from relujax._src.models.monitor import set_monitor as set_monitor
from relujax._src.models.registry import MODELS as MODELS
from relujax._src.models.registry import create_model as create_model
from relujax._src.models.resblock import NetResDeep as NetResDeep
from relujax._src.models.resblock import ResBlock as ResBlock
from relujax._src.models.resnet_cifar import CifarResNet as CifarResNet
from relujax._src.models.resnet_cifar import resnet20 as resnet20
from relujax._src.models.resnet_cifar import resnet32 as resnet32
from relujax._src.models.resnet_cifar import resnet44 as resnet44
from relujax._src.models.resnet_cifar import resnet56 as resnet56
from relujax._src.models.resnet_cifar import resnet110 as resnet110
from relujax._src.models.resnet_imagenet import ImageNetResNet as ImageNetResNet
from relujax._src.models.resnet_imagenet import resnet18 as resnet18
from relujax._src.models.resnet_imagenet import resnet34 as resnet34
from relujax._src.models.resnet_imagenet import resnet50 as resnet50
from relujax._src.models.stack import BlockStack as BlockStack

__all__ = [
    "MLP",
    "MODELS",
    "Activation",
    "BatchNorm",
    "BlockStack",
    "CifarResNet",
    "DeadUnitStats",
    "ImageNetResNet",
    "Net",
    "NetBatchNorm",
    "NetDepth",
    "NetDropout",
    "NetRes",
    "NetResDeep",
    "NetWidth",
    "ResBlock",
    "SimpleNN",
    "create_model",
    "dead_unit_stats",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet110",
    "set_monitor",
]
