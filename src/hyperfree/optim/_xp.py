r"""The two number systems of AGD's step finish, behind one interface (``xp``).

The step's scalar arithmetic (G, η, the coefficients: :func:`~._kernels.step_size`, and the
estimate pieces of :mod:`.pieces`) is written once over ``xp``. On an accelerator, and under
``torch.compile``, ``xp`` is :data:`DEVICE`: every scalar stays a 0-dim device tensor, so
nothing synchronises with the host. On eager CPU the host *is* the device, and ~15 tiny tensor
ops after a sweep over the weights cost more (cold caches) than reading the flat vector once
(``docs/agd-speed.md``): ``xp`` is :data:`HOST`, the same operations on numpy views of the
same tensors, in the same dtype; the coefficients then reach the update as Python numbers.
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEVICE", "HOST"]

_NUMPY = {torch.float64: np.float64, torch.float32: np.float32}


class DEVICE:
    """The arithmetic on 0-dim device tensors (no host sync)."""

    host = False
    sqrt, log, isfinite = torch.sqrt, torch.log, torch.isfinite

    @staticmethod
    def quiet() -> Any:
        return contextlib.nullcontext()

    @staticmethod
    def array(t: Tensor) -> Tensor:
        return t

    @staticmethod
    def dot(a: Tensor, b: Tensor) -> Tensor:
        return torch.dot(a, b)

    @staticmethod
    def where(c: Any, a: Any, b: Any) -> Tensor:
        return torch.where(c, a, b)

    @staticmethod
    def maximum(x: Tensor, v: float) -> Tensor:
        return x.clamp(min=v)

    @staticmethod
    def cast(x: Tensor, like: Tensor) -> Tensor:
        return x.to(like.dtype)

    @staticmethod
    def take(v: Tensor, index: Tensor) -> Tensor:
        return v.index_select(0, index) if v.dim() else v

    @staticmethod
    def read(t: Tensor) -> Tensor:
        return t[0]

    @staticmethod
    def write(t: Tensor, value: Tensor) -> None:
        t.copy_(value)


class HOST:
    """The same arithmetic on numpy views of the same (CPU) tensors."""

    host = True
    sqrt, log, isfinite, maximum = np.sqrt, np.log, np.isfinite, np.maximum

    @staticmethod
    def quiet() -> Any:
        """numpy's warnings off: 0/0 and log of NaN are expected (and handled)."""
        return np.errstate(all="ignore")

    @staticmethod
    def array(t: Tensor) -> np.ndarray:
        """The values of ``t`` (one read, in its dtype; ``tolist`` issues fewer ops than
        ``numpy()``)."""
        return np.asarray(t.tolist(), dtype=_NUMPY[t.dtype])

    @staticmethod
    def dot(a: np.ndarray, b: np.ndarray) -> Any:
        return np.dot(a, b)

    @staticmethod
    def where(c: Any, a: Any, b: Any) -> Any:
        return np.where(c, a, b)

    @staticmethod
    def cast(x: Any, like: Any) -> Any:
        return np.asarray(x, dtype=np.asarray(like).dtype)

    @staticmethod
    def take(v: Any, index: np.ndarray) -> Any:
        return v[index] if np.ndim(v) else v

    @staticmethod
    def read(t: Tensor) -> Any:
        return t.numpy()[0]

    @staticmethod
    def write(t: Tensor, value: Any) -> None:
        t.numpy()[...] = value
