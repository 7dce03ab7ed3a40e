"""Objectives: the AGD paper's square loss and cross-entropy (SPEC §1.2).

With logits ``f`` of shape ``(B, C)`` (token models: ``(B, T, V)``, flattened to ``(B·T, V)``)
and integer targets ``y``:

* ``mse`` (square loss, Bernstein et al. 2023, arXiv 2304.05187, reference training script):
  ``t = one_hot(y, C) · sqrt(C)``, loss ``= mean over batch and classes of (f − t)²``.
* ``xent``: ``mean over batch of logsumexp(f) − f_y``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossFn", "square_loss", "cross_entropy", "get_loss", "flatten_outputs",
           "correct_count"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def flatten_outputs(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, T, V), (B, T)`` -> ``(B·T, V), (B·T,)``; ``(B, C), (B,)`` is returned unchanged."""
    if logits.dim() == 3:
        return logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    return logits, target


def square_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over batch and classes of ``(f − one_hot(y)·sqrt(C))²`` (0-dim tensor)."""
    logits, target = flatten_outputs(logits, target)
    num_classes = logits.shape[-1]
    onehot = F.one_hot(target, num_classes).to(logits.dtype) * math.sqrt(num_classes)
    return F.mse_loss(logits, onehot)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over batch of ``logsumexp(f) − f_y`` (0-dim tensor)."""
    logits, target = flatten_outputs(logits, target)
    return F.cross_entropy(logits, target)


_LOSSES: dict[str, LossFn] = {"mse": square_loss, "xent": cross_entropy}


def get_loss(name: str) -> LossFn:
    """The loss called ``name`` ("mse" or "xent"); ValueError otherwise."""
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(_LOSSES)}") from None


@torch.no_grad()
def correct_count(logits: Tensor, target: Tensor) -> Tensor:
    """Number of argmax hits (token models: next-token hits) as a 0-dim tensor, no sync."""
    logits, target = flatten_outputs(logits, target)
    return (logits.argmax(dim=-1) == target).sum()
