r"""AGD's retraction, the last unit of the fast step: rescale every retraction cell.

The retraction cells are every matrix block and conv kernel slice (the Frobenius cells of
:mod:`.rules`) and every embedding row. With the weights just moved, ``W' = W + Δ``:

.. code-block:: text

    sq_c      = ‖W'_c‖²               Whole units: ONE torch._foreach_norm; conv slices as
                                      column sums (_conv_squares); embedding rows per row
    delta_sq_c = ‖Δ_c‖² = a_c² ‖s_c‖²  (pieces with needs_step) s_c the cell's source (u, or the
                                      polar direction D), a_c its coefficient in the move;
                                      measured the same way, in the same flat vector
    ONE reduce of [sq | ‖s‖²] over the shards (sharded parameters)
    W_c ← W_c · retraction.factor(sq_c, ρ_c, delta_sq_c)     ONE torch._foreach_mul_

Embedding rows are whole on every shard (no reduce): ``‖Δ_r‖ = |a|·σ`` for a row moved along
``u_r/‖u_r‖`` (spectral), ``|a_c|·‖u_r‖`` for a row of a table moved as one cell (frobenius).
``ok`` False (a skipped step on the device) makes every factor 1.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._kernels import (_by_group, _conv_squares, _group_cells, _narrow, _pattern_view, _seen,
                       _unbind)
from ._plan import Plan

__all__ = ["Move", "retract"]


class Move(NamedTuple):
    """What a retraction with ``needs_step`` reads of the step just taken."""

    sources: list[Tensor]  # per parameter the tensor it moved along: u, or the polar direction
    coefficients: Any      # [cells | ps] of :class:`~._kernels.Coefficients`
    row_norms: list[Tensor]  # the embedding rows' ‖u_r‖ (spectral rows)
    scale: Any             # −gain·lr·η/L, one or per parameter


def retract(plan: Plan, params: list[Tensor], retraction: Any, reduce: Any, ok: Any,
            move: Move | None = None) -> None:
    """Rescale every retraction cell of ``params`` (just moved) by
    ``retraction.factor(‖W_c‖², ρ_c, ‖Δ_c‖²)``; a retraction with ``needs_step`` needs
    ``move``."""
    acc = plan.consts.rho.dtype
    step = retraction.needs_step
    if step and move is None:
        raise ValueError(f"{type(retraction).__name__} needs the step's move; got move=None")

    def squares(ts: list[Tensor]) -> list[Tensor]:
        out = []
        if plan.retract_whole:
            views = [_narrow(ts[u.param], u.select) for u in plan.retract_whole]
            out.append(torch.stack(torch._foreach_norm(views, dtype=acc)).square())
        if plan.retract_patterns:
            out.append(_conv_squares(plan, ts, plan.retract_patterns, acc))
        return out

    sq = squares(params)
    if sq:
        n = plan.n_retract
        flat = torch.cat(sq + (squares(move.sources) if step else []))
        flat = reduce(flat) if reduce is not None else flat
        delta_sq = None
        if step:
            a = torch.as_tensor(move.coefficients, device=flat.device).to(acc)
            delta_sq = a.index_select(0, plan.consts.retract_coef).square() * flat[n:]
        factor = retraction.factor(flat[:n], plan.consts.rho, delta_sq)
        if not isinstance(ok, (bool, np.bool_)):
            factor = torch.where(ok, factor, 1.0)
        n_whole = len(plan.retract_whole)
        ps = [_narrow(params[u.param], u.select) for u in plan.retract_whole]
        scalars = _unbind(factor[:n_whole], ps) if ps else []
        pats = plan.retract_patterns
        tiled = factor[n_whole:].index_select(0, plan.consts.rho_tile_index).split(
            [u.tiled[1] for u in pats]) if pats else []
        cells = factor[n_whole:].split([u.K for u in pats]) if pats else []
        for u, t, c in zip(pats, tiled, cells):
            x = _narrow(params[u.param], u.select)
            if _seen(x, u):
                ps.append(_pattern_view(x, u, u.tiled))
                scalars.append(t)
            else:
                _by_group(x, u).mul_(_group_cells(c, u).to(x.dtype))
        if ps:
            torch._foreach_mul_(ps, scalars)
    for j, i in enumerate(plan.retract_rows):  # embedding rows: whole on every shard
        sq_rows = torch.linalg.vector_norm(params[i], dim=1, dtype=acc).square()
        delta_sq = _row_steps(plan, j, i, move, acc) if step else None
        factor = retraction.factor(sq_rows, plan.radius[i], delta_sq)  # ρ a float: no op
        if not isinstance(ok, (bool, np.bool_)):
            factor = torch.where(ok, factor, 1.0)
        params[i].mul_(factor.unsqueeze(1).to(params[i].dtype))


def _row_steps(plan: Plan, j: int, i: int, move: Move, acc: torch.dtype) -> Tensor:
    """``‖Δ_r‖²`` of every row of the embedding ``i`` (the ``j``-th row-wise retraction)."""
    cell = plan.retract_row_cell[j]
    if cell is None:  # spectral rows: each moved by |scale|·σ along u_r/‖u_r‖
        n = move.row_norms[plan.rows.index(i)]
        s = move.scale[i] if np.ndim(move.scale) else move.scale
        s = torch.as_tensor(s, device=n.device).to(acc)
        return torch.where(n > 0, (s * plan.sigma[i]).square(), 0.0)
    source = move.sources[i]
    a = torch.as_tensor(move.coefficients, device=source.device).to(acc)[cell]
    return a.square() * torch.linalg.vector_norm(source, dim=1, dtype=acc).square()
