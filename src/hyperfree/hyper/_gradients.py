"""What happens to the gradients between the backward pass and the tower's update.

``HyperModule.step`` makes one ``torch.autograd.grad`` call, which returns the weight gradients
``g`` and the hypergradients ``∂L/∂h_k`` of every tuned level. Before the weights are updated,
one host synchronisation checks that the loss, ``Σg``, every ``∂L/∂h`` and the new
hyperparameters are finite (:func:`finite_flags`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["finite_flags", "all_finite"]


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def finite_flags(loss: Tensor, grads: Sequence[Tensor], hgrads: Sequence[Tensor | None],
                 hyper: Sequence[Tensor]) -> tuple[bool, list[bool]]:
    """``(loss, gradients and hypergradients all finite, [entry of hyper is finite, …])`` in one
    host synchronisation. A gradient is judged by its sum (nan/inf propagate; accumulated in at
    least float32, so an overflowing sum, entries ~1e34, counts as non-finite)."""
    small = torch.cat([loss.detach().reshape(-1).double()]
                      + [g.sum(dtype=_acc_dtype(g)).reshape(1).double() for g in grads]
                      + [h.reshape(-1).double() for h in hgrads if h is not None])
    values = [h.detach().reshape(-1).double() for h in hyper]
    flags = torch.cat([torch.isfinite(small).all().reshape(1)]
                      + [torch.isfinite(v) for v in values]).tolist()
    return bool(flags[0]), [bool(f) for f in flags[1:]]


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one sum per tensor, one host sync)."""
    sums = torch.stack([t.detach().sum(dtype=_acc_dtype(t)).double() for t in tensors])
    return bool(torch.isfinite(sums).all())
