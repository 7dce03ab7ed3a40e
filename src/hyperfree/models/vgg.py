"""CIFAR-style VGG-11/13/16/19 (Simonyan & Zisserman 2015) in the AGD paper's convention.

Layer lists follow the standard ``cfgs`` table (configurations A, B, D, E): a number is a
``conv3x3 -> BatchNorm2d(affine=False) -> ReLU`` stage of that many channels at width 64, ``"M"``
is ``MaxPool2d(2)``. With width ``w`` the stages have ``w, 2w, 4w, 8w`` channels. The classifier
is one bias-free Linear(8w, num_classes) as in the AGD paper's CIFAR experiments (Bernstein et al.
2023, arXiv 2304.05187). A max-pool is skipped once the feature map is already 1×1, so 28×28
(Fashion-MNIST) and 32×32 (CIFAR) inputs both end at 1×1; larger inputs are average-pooled to 1×1
before the classifier.
"""
from __future__ import annotations

from torch import Tensor, nn

from ._registry import register_model
from .layers import batch_norm, conv3x3, linear, pooled_size

__all__ = ["VGG", "CFGS", "vgg11", "vgg13", "vgg16", "vgg19"]

Cfg = list[int | str]  # channels at width 64, or "M" for a 2×2 max-pool
CFGS: dict[str, Cfg] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def make_features(cfg: Cfg, in_channels: int, image_size: int, width: int
                  ) -> tuple[nn.Sequential, int]:
    """The convolutional trunk for ``cfg`` and its number of output channels."""
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for item in cfg:
        if item == "M":
            if size > 1:  # a 1×1 map cannot be pooled further
                layers.append(nn.MaxPool2d(2))
                size = pooled_size(size)
            continue
        c_out = width * int(item) // 64
        layers += [conv3x3(c_in, c_out), batch_norm(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    if size > 1:
        layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers), c_in


class VGG(nn.Module):
    """VGG trunk from a ``cfgs`` list plus a single bias-free linear classifier."""

    def __init__(self, cfg: Cfg, *, in_channels: int, num_classes: int, image_size: int,
                 width: int):
        super().__init__()
        self.features, c_out = make_features(cfg, in_channels, image_size, width)
        self.classifier = linear(c_out, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_classes)
        return self.classifier(self.features(x).flatten(1))


def _vgg(name: str, in_channels: int, num_classes: int, image_size: int, width: int) -> VGG:
    return VGG(CFGS[name], in_channels=in_channels, num_classes=num_classes,
               image_size=image_size, width=width)


@register_model("vgg11", description="CIFAR-style VGG-11, BN(affine=False), no biases",
                default_width=64)
def vgg11(*, in_channels: int, num_classes: int, image_size: int, width: int) -> VGG:
    """VGG-11 (configuration A); ``width`` = first-stage channels (default 64)."""
    return _vgg("vgg11", in_channels, num_classes, image_size, width)


@register_model("vgg13", description="CIFAR-style VGG-13, BN(affine=False), no biases",
                default_width=64)
def vgg13(*, in_channels: int, num_classes: int, image_size: int, width: int) -> VGG:
    """VGG-13 (configuration B); ``width`` = first-stage channels (default 64)."""
    return _vgg("vgg13", in_channels, num_classes, image_size, width)


@register_model("vgg16", description="CIFAR-style VGG-16, BN(affine=False), no biases",
                default_width=64)
def vgg16(*, in_channels: int, num_classes: int, image_size: int, width: int) -> VGG:
    """VGG-16 (configuration D); ``width`` = first-stage channels (default 64)."""
    return _vgg("vgg16", in_channels, num_classes, image_size, width)


@register_model("vgg19", description="CIFAR-style VGG-19, BN(affine=False), no biases",
                default_width=64)
def vgg19(*, in_channels: int, num_classes: int, image_size: int, width: int) -> VGG:
    """VGG-19 (configuration E); ``width`` = first-stage channels (default 64)."""
    return _vgg("vgg19", in_channels, num_classes, image_size, width)
