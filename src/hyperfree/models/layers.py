"""Blocks shared by several model families, all in the AGD paper's convention (SPEC §1.2).

Every weighted layer here is bias-free and every BatchNorm has no affine parameters, so a network
built from them has only 2-D (Linear) and 4-D (Conv2d) parameters — what AGD's paper-exact mode
accepts (Bernstein et al. 2023, arXiv 2304.05187).
"""
from __future__ import annotations

from torch import nn

__all__ = ["conv3x3", "conv1x1", "batch_norm", "linear", "pooled_size"]


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias: ``(B, c_in, H, W) -> (B, c_out, ⌈H/stride⌉, …)``."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution, no bias (projection shortcuts and bottleneck ends)."""
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d without affine parameters (no 1-D gain or shift to train)."""
    return nn.BatchNorm2d(channels, affine=False)


def linear(d_in: int, d_out: int) -> nn.Linear:
    """Linear map without bias: its only parameter is the 2-D weight ``(d_out, d_in)``."""
    return nn.Linear(d_in, d_out, bias=False)


def pooled_size(size: int, kernel: int = 2, stride: int = 2, padding: int = 0) -> int:
    """Spatial size after a pooling/strided layer: ``⌊(size + 2·padding − kernel)/stride⌋ + 1``."""
    return (size + 2 * padding - kernel) // stride + 1
