"""PyTorch originals of the relujax models, for parity tests and benchmarks.

Written for relujax from the architectures described in "Deep Learning with PyTorch" ch. 8,
He et al. 2015 and torchvision's ResNet layout; layer names match the relujax models so that
``relujax.interop.load_torch_state_dict`` maps one onto the other. Inputs are NCHW.
Importing this module needs torch (callers guard with ``pytest.importorskip("torch")``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimpleNN(nn.Module):
    def __init__(self, in_features=4, hidden=4, out_features=2, prelu=False):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.PReLU() if prelu else nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class MLP(SimpleNN):
    def __init__(self, in_features=784, hidden=128, out_features=10, prelu=False):
        super().__init__(in_features, hidden, out_features, prelu)


class Net(nn.Module):
    def __init__(self, num_classes=2, act=torch.tanh):
        super().__init__()
        self.act = act
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.max_pool2d(self.act(self.conv1(x)), 2)
        out = F.max_pool2d(self.act(self.conv2(out)), 2)
        out = out.view(-1, 8 * 8 * 8)
        return self.fc2(self.act(self.fc1(out)))


class NetWidth(nn.Module):
    def __init__(self, n_chans1=32, num_classes=2, act=torch.tanh):
        super().__init__()
        self.n_chans1 = n_chans1
        self.act = act
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.max_pool2d(self.act(self.conv1(x)), 2)
        out = F.max_pool2d(self.act(self.conv2(out)), 2)
        out = out.view(-1, 8 * 8 * self.n_chans1 // 2)
        return self.fc2(self.act(self.fc1(out)))


class NetDropout(nn.Module):
    def __init__(self, n_chans1=32, p=0.4, num_classes=2, act=torch.tanh):
        super().__init__()
        self.n_chans1 = n_chans1
        self.act = act
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv1_dropout = nn.Dropout2d(p=p)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv2_dropout = nn.Dropout2d(p=p)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        out = self.conv1_dropout(F.max_pool2d(self.act(self.conv1(x)), 2))
        out = self.conv2_dropout(F.max_pool2d(self.act(self.conv2(out)), 2))
        out = out.view(-1, 8 * 8 * self.n_chans1 // 2)
        return self.fc2(self.act(self.fc1(out)))


class NetBatchNorm(nn.Module):
    def __init__(self, n_chans1=32, num_classes=2, act=torch.tanh):
        super().__init__()
        self.n_chans1 = n_chans1
        self.act = act
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv1_batchnorm = nn.BatchNorm2d(num_features=n_chans1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv2_batchnorm = nn.BatchNorm2d(num_features=n_chans1 // 2)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.max_pool2d(self.act(self.conv1_batchnorm(self.conv1(x))), 2)
        out = F.max_pool2d(self.act(self.conv2_batchnorm(self.conv2(out))), 2)
        out = out.view(-1, 8 * 8 * self.n_chans1 // 2)
        return self.fc2(self.act(self.fc1(out)))


class NetDepth(nn.Module):
    residual = False

    def __init__(self, n_chans1=32, num_classes=2, act=torch.relu):
        super().__init__()
        self.n_chans1 = n_chans1
        self.act = act
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(n_chans1 // 2, n_chans1 // 2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(4 * 4 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.max_pool2d(self.act(self.conv1(x)), 2)
        out = F.max_pool2d(self.act(self.conv2(out)), 2)
        branch = self.act(self.conv3(out))
        out = F.max_pool2d(branch + out if self.residual else branch, 2)
        out = out.view(-1, 4 * 4 * self.n_chans1 // 2)
        return self.fc2(self.act(self.fc1(out)))


class NetRes(NetDepth):
    residual = True


class ResBlock(nn.Module):
    def __init__(self, n_chans, act=torch.relu):
        super().__init__()
        self.act = act
        self.conv = nn.Conv2d(n_chans, n_chans, kernel_size=3, padding=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(num_features=n_chans)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.constant_(self.batch_norm.weight, 0.5)
        nn.init.zeros_(self.batch_norm.bias)

    def forward(self, x):
        return self.act(self.batch_norm(self.conv(x))) + x


class NetResDeep(nn.Module):
    """``shared_blocks=True`` is the book's code: ONE block object repeated ``n_blocks`` times."""

    def __init__(
        self, n_chans1=32, n_blocks=100, num_classes=2, shared_blocks=False, act=torch.relu
    ):
        super().__init__()
        self.n_chans1 = n_chans1
        self.act = act
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        if shared_blocks:
            blocks = n_blocks * [ResBlock(n_chans1, act)]
        else:
            blocks = [ResBlock(n_chans1, act) for _ in range(n_blocks)]
        self.resblocks = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(8 * 8 * n_chans1, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.max_pool2d(self.act(self.conv1(x)), 2)
        out = F.max_pool2d(self.resblocks(out), 2)
        out = out.view(-1, 8 * 8 * self.n_chans1)
        return self.fc2(self.act(self.fc1(out)))


class _BasicBlockA(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = (planes - in_planes) // 2 if (stride != 1 or in_planes != planes) else 0
        self.project = stride != 1 or in_planes != planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.project:
            shortcut = F.pad(
                x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad)
            )
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            layers = []
            for j in range(n):
                layers.append(_BasicBlockA(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


def resnet20(num_classes=10):
    return CifarResNet(20, num_classes)


def resnet32(num_classes=10):
    return CifarResNet(32, num_classes)


def resnet44(num_classes=10):
    return CifarResNet(44, num_classes)


def resnet56(num_classes=10):
    return CifarResNet(56, num_classes)


def resnet110(num_classes=10):
    return CifarResNet(110, num_classes)


class _Block(nn.Module):
    def __init__(self, kind, in_planes, planes, stride):
        super().__init__()
        self.kind = kind
        out_planes = planes * (4 if kind == "bottleneck" else 1)
        if kind == "basic":
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
        else:
            self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.kind == "bottleneck":
            out = self.bn3(self.conv3(F.relu(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ImageNetResNet(nn.Module):
    _DEPTHS = {
        18: ("basic", (2, 2, 2, 2)),
        34: ("basic", (3, 4, 6, 3)),
        50: ("bottleneck", (3, 4, 6, 3)),
    }

    def __init__(self, depth, num_classes=1000):
        super().__init__()
        kind, counts = self._DEPTHS[depth]
        expansion = 4 if kind == "bottleneck" else 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            blocks = []
            for j in range(count):
                blocks.append(_Block(kind, in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes * expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512 * expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(out.mean(dim=(2, 3)))


def resnet18(num_classes=1000):
    return ImageNetResNet(18, num_classes)


def resnet34(num_classes=1000):
    return ImageNetResNet(34, num_classes)


def resnet50(num_classes=1000):
    return ImageNetResNet(50, num_classes)
