"""Small bias-free models of the three kinds the AGD paper trains (defined here, independently
of ``hyperfree.models``, so the optimiser tests do not depend on the model registry), and a
fixture that restores the global parameter-kind registry after a test changes it."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn


class FCN(nn.Module):
    def __init__(self, d_in: int = 12, width: int = 16, depth: int = 4, d_out: int = 5):
        super().__init__()
        dims = [d_in] + [width] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x) * math.sqrt(2)
        return x


class VGGish(nn.Module):
    def __init__(self, c: int = 3, width: int = 6, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width, affine=False),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width, affine=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(2 * width, classes, bias=False)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, affine=False)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, affine=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                      if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        short = self.short(out) if self.short is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + short


class PreActResNet(nn.Module):
    def __init__(self, c: int = 3, width: int = 4, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(PreActBlock(width, width, 1), PreActBlock(width, 2 * width, 2))
        self.bn = nn.BatchNorm2d(2 * width, affine=False)
        self.head = nn.Linear(2 * width, classes, bias=False)

    def forward(self, x):
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(out.mean(dim=(2, 3)))


def make(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A model and an input batch for it."""
    if kind == "fcn":
        return FCN(), torch.randn(16, 12)
    if kind == "vgg":
        return VGGish(), torch.randn(8, 3, 8, 8)
    return PreActResNet(), torch.randn(8, 3, 8, 8)


@pytest.fixture
def restore_kind_rules():
    """Undo any change a test makes to the global kinds registry (RULES, TIE_RESOLUTION)."""
    from hyperfree.optim import kinds

    rules, ties = dict(kinds.RULES), dict(kinds.TIE_RESOLUTION)
    yield kinds
    kinds.RULES.clear()
    kinds.RULES.update(rules)
    kinds.TIE_RESOLUTION.clear()
    kinds.TIE_RESOLUTION.update(ties)
