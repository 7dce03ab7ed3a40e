"""The AGD paper's fully-connected network (Bernstein et al. 2023, arXiv 2304.05187, SPEC §1.2).

For depth ``D`` and width ``w`` on inputs of ``d_in = in_channels · image_size²`` features::

    h_0 = flatten(x)                                   # (B, d_in)
    h_l = sqrt(2) · relu(W_l h_{l-1})   for l = 1 … D−1, W_1: (w, d_in), W_l: (w, w)
    f(x) = W_D h_{D-1}                                 # W_D: (num_classes, w)

No biases; the ``sqrt(2)`` keeps the activations' scale under ReLU (it halves the second moment).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._registry import register_model
from .layers import linear

__all__ = ["FCN", "fcn"]


class FCN(nn.Module):
    """``depth`` bias-free Linear layers with ``sqrt(2)·relu`` between them (see module doc)."""

    def __init__(self, d_in: int, num_classes: int, *, depth: int, width: int):
        super().__init__()
        if depth < 2:
            raise ValueError(f"fcn depth must be >= 2 (input and output layers), got {depth}")
        dims = [d_in] + [width] * (depth - 1) + [num_classes]
        self.layers = nn.ModuleList(linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.gain = math.sqrt(2.0)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_classes)
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h)) * self.gain
        return self.layers[-1](h)


@register_model("fcn", description="AGD paper's bias-free MLP, sqrt(2)-scaled ReLU (SPEC §1.2)",
                default_depth=8, default_width=256, min_depth=2)
def fcn(*, in_channels: int, num_classes: int, image_size: int, depth: int, width: int) -> FCN:
    """Fully-connected network of ``depth`` layers and hidden ``width`` (defaults 8 × 256)."""
    return FCN(in_channels * image_size ** 2, num_classes, depth=depth, width=width)
