"""The cells a kind's rule asks the fast step's plan for (:mod:`.rules` -> :mod:`._plan`).

A rule (``rules.KindRule.frobenius_cells`` and its siblings) describes how a tensor is cut
into cells with these small records; the plan (:func:`._plan.build_plan`) turns them into the
units the step reduces and updates. ``select`` is ``(dim, start, length)`` of the LOCAL tensor
(``Tensor.narrow``; None: all of it), so that a shard of an FSDP2 parameter lists the
intersection of every global cell with its rows.
"""
from __future__ import annotations

import dataclasses

__all__ = ["LocalRows", "L2Cell", "ConvCells", "RowCells", "SignCell", "MatrixView",
           "PolarCells"]


@dataclasses.dataclass(frozen=True)
class LocalRows:
    """This process holds rows ``[start, start + count)`` of dim 0 of a ``total``-row tensor
    (FSDP2 shards along dim 0; an unsharded tensor holds all of them)."""

    start: int
    count: int
    total: int


@dataclasses.dataclass(frozen=True)
class L2Cell:
    """One ℓ2 cell: the slice ``select`` of the local tensor (None: all of it)."""

    select: tuple[int, int, int] | None = None


@dataclasses.dataclass(frozen=True)
class ConvCells:
    """The K kernel-position ℓ2 cells of one conv group (the slice ``select``); with
    ``groups`` > 1, those of ``groups`` consecutive groups whose every cell is ONE element (a
    depthwise conv's ``(c_out/g, c_in/g) = (1, 1)``), reduced and updated as one unit."""

    select: tuple[int, int, int] | None = None
    groups: int = 1


@dataclasses.dataclass(frozen=True)
class RowCells:
    """One ℓ2 cell per row of dim 0 (an embedding table in the spectral family)."""


@dataclasses.dataclass(frozen=True)
class SignCell:
    """One ℓ∞ cell: direction ``sign(u)``, term ``‖u‖₁`` (a gain in the spectral family)."""


@dataclasses.dataclass(frozen=True)
class MatrixView:
    """How a matrix kind's tensor is the stack of its ``n`` ``(d_out, d_in)`` matrices:
    ``t.reshape(split).permute(order).reshape(n, d_out, d_in)``, and back."""

    split: tuple[int, ...]
    order: tuple[int, ...]
    n: int
    d_out: int
    d_in: int


@dataclasses.dataclass(frozen=True)
class PolarCells:
    """The matrices of a tensor, each with direction ``U Vᵀ`` (Newton–Schulz)."""

    view: MatrixView
