"""Pre-activation ResNets for CIFAR-size inputs (He, Zhang, Ren & Sun 2016, "Identity Mappings in
Deep Residual Networks", arXiv 1603.05027), in the AGD paper's convention (SPEC §1.2): no biases,
BatchNorm without affine parameters.

Network, for stem width ``w`` and stage ``i = 0, 1, …`` with ``planes_i = w · 2^i``::

    h = conv3x3(x)                                    # (B, w, H, W), stride 1
    h = stage_i(h)      # n_i blocks; the first has stride 1 (i = 0) or 2 (i > 0)
    f(x) = Linear(avgpool(relu(BN(h))))               # (B, num_classes)

Basic block (expansion 1)::

    a = relu(BN(x));  out = conv3x3(relu(BN(conv3x3_stride(a)))) + shortcut

Bottleneck (expansion 4; stride in the 3×3)::

    a = relu(BN(x));  out = conv1x1(relu(BN(conv3x3_stride(relu(BN(conv1x1(a))))))) + shortcut

``shortcut`` is ``x`` when the shape is unchanged, else ``conv1x1_stride(a)`` (bias-free).
``resnet_small`` (3 stages of ``depth`` basic blocks, width 16) is the CPU-sized CIFAR/Fashion
ResNet for the hypergradient experiments (Chandra et al. 2022, arXiv 1909.13371).

``resnet50_imagenet`` is the torchvision-style ImageNet ResNet-50 (He et al. 2016, arXiv
1512.03385; "v1.5": the stride is in the bottleneck's 3×3 conv), post-activation, in the same
convention (every conv and the fc bias-free, every BatchNorm without affine parameters).
For width ``w`` (64 in the paper)::

    h = maxpool3x3_s2(relu(BN(conv7x7_s2(x))))              # (B, w, H/4, W/4)
    h = layer_i(h)   i = 0…3: [3, 4, 6, 3] bottlenecks of planes w·2^i, stride 1, 2, 2, 2
    f(x) = fc(avgpool(h))                                    # (B, num_classes); fc: 32w -> classes

    bottleneck: a = relu(BN(conv1x1(x)));  b = relu(BN(conv3x3_s(a)))
                out = relu(BN(conv1x1(b)) + downsample(x))

with ``downsample = BN(conv1x1_s(x))`` when the shape changes, else the identity.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._registry import register_model
from .layers import batch_norm, conv1x1, conv3x3, linear

__all__ = ["PreActBasicBlock", "PreActBottleneck", "PreActResNet", "Bottleneck",
           "ResNetImageNet", "resnet18", "resnet34", "resnet50", "resnet_small",
           "resnet50_imagenet"]


class PreActBasicBlock(nn.Module):
    """Two pre-activated 3×3 convolutions plus identity or 1×1 projection shortcut."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = batch_norm(c_in), conv3x3(c_in, planes, stride)
        self.bn2, self.conv2 = batch_norm(planes), conv3x3(planes, planes)
        self.shortcut = (conv1x1(c_in, planes, stride)
                         if stride != 1 or c_in != planes else None)

    def forward(self, x: Tensor) -> Tensor:  # (B, c_in, H, W) -> (B, planes, H/s, W/s)
        a = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(a)
        out = self.conv1(a)
        return self.conv2(torch.relu(self.bn2(out))) + skip


class PreActBottleneck(nn.Module):
    """Pre-activated 1×1 → 3×3 (strided) → 1×1 bottleneck, output ``4 · planes`` channels."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = planes * self.expansion
        self.bn1, self.conv1 = batch_norm(c_in), conv1x1(c_in, planes)
        self.bn2, self.conv2 = batch_norm(planes), conv3x3(planes, planes, stride)
        self.bn3, self.conv3 = batch_norm(planes), conv1x1(planes, c_out)
        self.shortcut = (conv1x1(c_in, c_out, stride)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:  # (B, c_in, H, W) -> (B, 4·planes, H/s, W/s)
        a = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(a)
        out = self.conv1(a)
        out = self.conv2(torch.relu(self.bn2(out)))
        return self.conv3(torch.relu(self.bn3(out))) + skip


Block = type[PreActBasicBlock] | type[PreActBottleneck]


class PreActResNet(nn.Module):
    """3×3 stem, ``len(blocks)`` stages of pre-activation blocks, final BN-ReLU, pool, Linear.

    ``blocks[i]`` is the number of blocks in stage ``i``; stage ``i`` has ``width · 2^i`` planes.
    """

    def __init__(self, block: Block, blocks: list[int], *, in_channels: int, num_classes: int,
                 width: int):
        super().__init__()
        self.stem = conv3x3(in_channels, width)
        stages: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers: list[nn.Module] = []
            for j in range(n):
                layers.append(block(c_in, planes, 2 if i > 0 and j == 0 else 1))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.bn = batch_norm(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_classes)
        h = self.stages(self.stem(x))
        return self.fc(self.pool(torch.relu(self.bn(h))).flatten(1))


@register_model("resnet18", description="pre-activation ResNet-18 for CIFAR, no biases/affine",
                default_width=64)
def resnet18(*, in_channels: int, num_classes: int, image_size: int, width: int
             ) -> PreActResNet:
    """Basic blocks [2, 2, 2, 2]; ``width`` = stem channels (default 64)."""
    return PreActResNet(PreActBasicBlock, [2, 2, 2, 2], in_channels=in_channels,
                        num_classes=num_classes, width=width)


@register_model("resnet34", description="pre-activation ResNet-34 for CIFAR, no biases/affine",
                default_width=64)
def resnet34(*, in_channels: int, num_classes: int, image_size: int, width: int
             ) -> PreActResNet:
    """Basic blocks [3, 4, 6, 3]; ``width`` = stem channels (default 64)."""
    return PreActResNet(PreActBasicBlock, [3, 4, 6, 3], in_channels=in_channels,
                        num_classes=num_classes, width=width)


@register_model("resnet50", description="pre-activation ResNet-50 for CIFAR, no biases/affine",
                default_width=64)
def resnet50(*, in_channels: int, num_classes: int, image_size: int, width: int
             ) -> PreActResNet:
    """Bottlenecks [3, 4, 6, 3] (expansion 4); ``width`` = stem channels (default 64)."""
    return PreActResNet(PreActBottleneck, [3, 4, 6, 3], in_channels=in_channels,
                        num_classes=num_classes, width=width)


@register_model("resnet_small", description="small pre-activation ResNet (3 stages) for CPU runs",
                default_depth=1, default_width=16)
def resnet_small(*, in_channels: int, num_classes: int, image_size: int, depth: int,
                 width: int) -> PreActResNet:
    """3 stages of ``depth`` basic blocks (default 1) at ``width, 2·width, 4·width`` (16)."""
    return PreActResNet(PreActBasicBlock, [depth] * 3, in_channels=in_channels,
                        num_classes=num_classes, width=width)


# --- torchvision-style ImageNet ResNet (post-activation) ---------------------------------------

class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 bottleneck with BN after each conv, output ``4 · planes``."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1, self.bn1 = conv1x1(c_in, planes), batch_norm(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), batch_norm(planes)
        self.conv3, self.bn3 = conv1x1(planes, c_out), batch_norm(c_out)
        self.downsample = (nn.Sequential(conv1x1(c_in, c_out, stride), batch_norm(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:  # (B, c_in, H, W) -> (B, 4·planes, H/s, W/s)
        skip = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + skip)


class ResNetImageNet(nn.Module):
    """7×7/2 stem + 3×3/2 max-pool, four bottleneck stages ``blocks``, average pool, fc."""

    def __init__(self, blocks: list[int], *, in_channels: int, num_classes: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3,
                               bias=False)
        self.bn1 = batch_norm(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers: list[nn.Module] = []
            for j in range(n):
                layers.append(Bottleneck(c_in, planes, 2 if i > 0 and j == 0 else 1))
                c_in = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_classes)
        h = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(self.layers(h)).flatten(1))


@register_model("resnet50_imagenet", default_width=64,
                description="torchvision-style ImageNet ResNet-50 v1.5, no biases/affine")
def resnet50_imagenet(*, in_channels: int, num_classes: int, image_size: int, width: int
                      ) -> ResNetImageNet:
    """ImageNet ResNet-50 (bottlenecks [3, 4, 6, 3]); ``width`` = stem channels (default 64)."""
    return ResNetImageNet([3, 4, 6, 3], in_channels=in_channels, num_classes=num_classes,
                          width=width)
