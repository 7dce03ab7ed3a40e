r"""AGD's fast step, unit by unit: measure every partial sum, finish, move, retract.

:func:`hyperfree.optim.functional.agd` calls these in order, on the units of a
:class:`~._plan.Plan`. Operator calls per step do not grow with the number of tensors (except
one reduction per conv kernel on CPU and one per row-wise embedding):

.. code-block:: text

    partial_sums   ONE flat vector (the plan's layout): ONE torch._foreach_norm over every
                   Whole unit; conv cells as column sums of an (M, P) view (on eager CPU
                   streamed through the plan's cache-sized accumulator); ONE ℓ1 foreach for the
                   signs; row norms of embeddings; ⟨u, D⟩ of every Newton–Schulz matrix (one
                   batched iteration per shape group); with the fresh estimate a second section
                   ⟨g, u⟩ per ℓ2 cell, ⟨g, sign u⟩, Σ_r ⟨g_r, u_r⟩/‖u_r‖, ⟨g, D⟩ per tensor
    step_size      ‖u_c‖ = √squares_c;  G_self = Σ σ_c/L·‖u_c‖ + Σ σ_c/L·rest_c;
                   F = Σ σ_c/L·⟨g_c, u_c⟩/‖u_c‖ + Σ σ/L·rest (fresh);
                   G = estimate.G(bias_correction·G_self, F);  ok = G finite (and the gradients)
                   η = log(½ + √(G + ¼)) (= log((1 + √(1 + 4G))/2)), 0 if not ok
                   c_c = −gain·lr·η/L·σ_c/‖u_c‖ (ℓ2 cells; 0 for a zero cell), −gain·lr·η/L·σ
                   (polar, sign), −gain·lr·η/L·σ/‖u_r‖ per embedding row
    move           W += c ⊙ source: ONE torch._foreach_addcmul_ (last read first); 0-dim
                   coefficients, tiled (r·P,) rows for conv cells
    retract        every retraction cell × retraction.factor(‖W_c‖², ρ_c, ‖Δ_c‖²), one reduce
                   (:mod:`._retract`)

The arithmetic runs on ``xp`` (:mod:`._xp`): device tensors (no host sync), or numpy on eager
CPU. A skipped step on the device makes η and every coefficient 0 and reads the sources through
``torch.where(ok, u, 0)``, so ``0·NaN`` cannot reach the weights; on the host the caller
returns before moving anything.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._plan import Plan
from ._xp import DEVICE, HOST
from .newton_schulz import batched_dot, ns_dtype, orthogonalize

__all__ = ["Polar", "Coefficients", "partial_sums", "step_size", "move",
           "stack_matrices", "unstack_matrices"]

#: ``polar(us, host, ns_steps) -> (directions {param: D}, ⟨u, D⟩ of every matrix in plan
#: order)``: the Newton–Schulz of the polar tensors; sharded steps pass their own
#: (:class:`~hyperfree.optim._distributed.ShardedStep`)
Polar = Callable[[list[Tensor], bool, int], tuple[dict[int, Tensor], Tensor]]


def partial_sums(plan: Plan, us: list[Tensor], fresh: list[Tensor] | None, *, host: bool,
                 ns_steps: int, polar: Polar | None = None, used: list[Tensor] | None = None
                 ) -> tuple[Tensor, list[Tensor], dict[int, Tensor]]:
    """``(flat, row_norms, directions)``: the local partial sums of the step's terms (the
    module docstring's layout), the row norms of every row-wise embedding, and the direction
    of every polar tensor. ``used`` (one boolean per row of each row-wise embedding, in
    ``plan.rows`` order): a row not used has norm 0 here, so it has no term and no move."""
    acc = plan.consts.sq_w.dtype
    parts: list[Tensor] = []
    if plan.whole:
        views = [_narrow(us[u.param], u.select) for u in plan.whole]
        parts.append(torch.stack(torch._foreach_norm(views, dtype=acc)).square())
    if plan.patterns:
        parts.append(_conv_squares(plan, us, plan.patterns, acc))
    if plan.signs:
        parts.append(torch.stack(torch._foreach_norm([us[i] for i in plan.signs], ord=1,
                                                     dtype=acc)))
    row_norms = [torch.linalg.vector_norm(us[i], dim=1, dtype=acc) for i in plan.rows]
    if used is not None:
        row_norms = [torch.where(u, n, 0.0) for n, u in zip(row_norms, used)]
    if row_norms:
        parts.append(torch.stack([n.sum() for n in row_norms]))
    directions: dict[int, Tensor] = {}
    if plan.polar:
        directions, dots = (polar or _local_polar(plan))(us, host, ns_steps)
        parts.append(dots)
    if fresh is not None:
        parts += _fresh_dots(plan, fresh, us, directions, row_norms, acc)
    return (torch.cat(parts) if len(parts) > 1 else parts[0]), row_norms, directions


def _narrow(t: Tensor, select: tuple[int, int, int] | None) -> Tensor:
    return t if select is None else t.narrow(*select)


def _conv_squares(plan: Plan, ts: list[Tensor], pats, acc: torch.dtype) -> Tensor:
    """``(Σ K,)``: the sum of squares of every kernel-position cell of every Pattern unit.

    On eager CPU each unit streams through the plan's cache-sized accumulator (a strided
    ``vector_norm(dim=(0, 1))`` is 5–8× slower than the floor there; a fresh buffer per step
    would pay page faults): ``acc += chunk ⊙ chunk`` over 1-D chunks, then column sums. The
    accumulator's list aliases one buffer, so it is used on CPU only (a CUDA stream would race)
    and never under ``torch.compile`` (it would functionalise it away)."""
    out = []
    for u in pats:
        x = _narrow(ts[u.param], u.select)
        if tuple(x.stride()) != u.strides or tuple(x.shape) != u.shape:
            out.append(torch.linalg.vector_norm(_by_group(x, u), dim=(1, 2),
                                                dtype=acc).square().flatten())
            continue  # a layout the plan did not see: a strided reduction
        v = _pattern_view(x, u, u.mp)
        if plan.accumulator is not None and u.mp[1] <= plan.accumulator.shape[0] \
                and not torch.compiler.is_compiling():
            rows = max(1, min(u.mp[0], plan.accumulator.shape[0] // u.mp[1]))
            a = plan.accumulator[:rows * u.mp[1]].zero_()
            chunks = v.view(-1).split(rows * u.mp[1])  # 1-D chunks: the loop vectorises
            torch._foreach_addcmul_([a if c.shape[0] == a.shape[0] else a[:c.shape[0]]
                                     for c in chunks], chunks, chunks)
            col = a.view(rows, u.mp[1]).sum(0)
        else:
            col = torch.linalg.vector_norm(v, dim=0, dtype=acc).square()
        out.append(col.view(u.K, u.inner).sum(1) if u.inner > 1 else col)
    return torch.cat(out) if len(out) > 1 else out[0]


def _by_group(x: Tensor, u: Any) -> Tensor:
    """A conv unit's slice ``(d0, d1, *k)`` as ``(groups, d0/groups, d1, *k)`` (a view): its
    cells are the reductions over dims 1 and 2."""
    return x.unflatten(0, (u.groups, -1))


def _group_cells(c: Tensor, u: Any) -> Tensor:
    """A conv unit's per-cell values ``(groups·K,)`` shaped to broadcast over
    :func:`_by_group`'s view."""
    return c.view(u.groups, 1, 1, *u.shape[2:])


def _local_polar(plan: Plan) -> Polar:
    """Newton–Schulz of every shape group of (unsharded) polar tensors."""

    def polar(us: list[Tensor], host: bool, ns_steps: int
              ) -> tuple[dict[int, Tensor], Tensor]:
        directions: dict[int, Tensor] = {}
        dots = []
        for group in plan.polar:
            mats = torch.cat([stack_matrices(us[i], v) for i, v in zip(group.params,
                                                                        group.views)])
            acc, bad = torch.promote_types(mats.dtype, torch.float32), None
            if not host:  # NS of a NaN is NaN: sanitise the (already copied) stack instead
                bad = ~torch.isfinite(torch.linalg.vector_norm(mats, dtype=acc))
                mats = torch.nan_to_num(mats, nan=0.0, posinf=0.0, neginf=0.0)
            D = orthogonalize(mats, steps=ns_steps, dtype=ns_dtype(mats.dtype))
            d = batched_dot(mats, D, acc)  # ⟨u_b, D_b⟩
            dots.append(d if bad is None else torch.where(bad, math.nan, d))
            start = 0
            for i, v in zip(group.params, group.views):
                directions[i] = unstack_matrices(D[start:start + v.n], v, us[i].shape)
                start += v.n
        return directions, torch.cat(dots)

    return polar


def stack_matrices(t: Tensor, v: Any) -> Tensor:
    """``t`` as the ``(n, d_out, d_in)`` stack of its matrices (a :class:`~.rules.MatrixView`;
    a view when the layout allows, else a copy)."""
    if v.order != tuple(range(len(v.order))):
        t = t.reshape(v.split).permute(v.order)
    return t.reshape(v.n, v.d_out, v.d_in)


def unstack_matrices(D: Tensor, v: Any, shape: torch.Size) -> Tensor:
    """The inverse of :func:`stack_matrices`: the stack ``D`` in the tensor's ``shape``."""
    if v.order != tuple(range(len(v.order))):
        D = D.reshape([v.split[j] for j in v.order]).permute(
            sorted(range(len(v.order)), key=v.order.__getitem__))
    return D.reshape(shape)


def _dot(a: Tensor, b: Tensor, acc: torch.dtype, dims: tuple[int, ...] | None = None
         ) -> Tensor:
    prod = a.to(acc) * b.to(acc)
    return prod.sum() if dims is None else prod.sum(dim=dims)


def _fresh_dots(plan: Plan, grads: list[Tensor], us: list[Tensor],
                directions: dict[int, Tensor], row_norms: list[Tensor], acc: torch.dtype
                ) -> list[Tensor]:
    """The fresh estimate's section: ⟨g, u⟩ per ℓ2 cell (divided by ‖u‖ in the finish),
    ⟨g, sign u⟩, Σ_r ⟨g_r, u_r⟩/‖u_r‖ and ⟨g, D⟩ per tensor (``docs/agd-stability.md`` §4)."""
    out: list[Tensor] = []
    if plan.whole:
        out.append(torch.stack([_dot(_narrow(grads[u.param], u.select),
                                     _narrow(us[u.param], u.select), acc) for u in plan.whole]))
    for u in plan.patterns:  # one entry per cell, in the order of _conv_squares
        g, m = _narrow(grads[u.param], u.select), _narrow(us[u.param], u.select)
        out.append(_dot(_by_group(g, u), _by_group(m, u), acc, (1, 2)).flatten())
    if plan.signs:
        out.append(torch.stack([_dot(grads[i], torch.sign(us[i]), acc) for i in plan.signs]))
    if plan.rows:
        out.append(torch.stack([
            torch.where(n > 0, _dot(grads[i], us[i], acc, (1,)) / n, 0.0).sum()
            for i, n in zip(plan.rows, row_norms)]))
    polar = [i for group in plan.polar for i in group.params]
    if polar:
        out.append(torch.stack([_dot(grads[i], directions[i], acc) for i in polar]))
    return out


class Coefficients(NamedTuple):
    """``η``, ``ok`` and the update's per-unit factors (device tensors, or numpy on the host)."""

    eta: Any
    ok: Any
    cells: Any       # (n_sq,) −gain·lr·η/L·σ_c/‖u_c‖ of every ℓ2 cell
    ps: Any          # polar then sign tensors: −gain·lr·η/L·σ
    scale: Any       # −gain·lr·η/L: one, or per parameter


def step_size(plan: Plan, flat: Tensor, estimate: Any, estimate_state: Any, direction: Any, *,
              finite: Any, multipliers: Any, host: bool) -> Coefficients:
    """G, η and the coefficients from the reduced partial sums ``flat`` (the module docstring's
    box); ``estimate`` (a piece) turns ``G_self`` and ``F`` into G; ``direction`` is what the
    source gave (:class:`~.pieces.Direction`); ``multipliers`` is gain·lr (one, or one per
    parameter)."""
    xp = HOST if host else DEVICE
    bias_correction, k = direction.bias_correction, direction.seen if estimate.lagged else None
    if host:
        bias_correction = None if bias_correction is None else float(bias_correction)
        k = None if k is None else int(k)
        if isinstance(multipliers, Tensor):
            multipliers = multipliers.numpy() if multipliers.dim() else float(multipliers)
    c, v = (plan.host_consts if host else plan.consts), xp.array(flat)
    n_sq, n_main = plan.n_sq, plan.n_main
    with xp.quiet():  # a zero cell's 0/0 is handled below
        norms = xp.sqrt(v[:n_sq])
        G = xp.dot(c.sq_w, norms) if n_sq else 0.0
        if n_main > n_sq:
            G = G + xp.dot(c.lin_w, v[n_sq:n_main])
        if bias_correction is not None:
            G = G * bias_correction
        ok = xp.isfinite(G) if finite is None else xp.isfinite(G) & finite
        F = None
        if v.shape[0] > n_main:  # the fresh estimate's section
            fresh = v[n_main:]
            F = xp.dot(c.sq_w, xp.where(norms > 0, fresh[:n_sq] / norms, 0.0)) \
                if n_sq else 0.0
            if fresh.shape[0] > n_sq:
                F = F + xp.dot(c.fresh_lin_w, fresh[n_sq:])
            ok = ok & xp.isfinite(F)
        G = estimate.G(xp, estimate_state, G, F, ok, k)
        eta = xp.where(ok, xp.log(0.5 + xp.sqrt(G + 0.25)), 0.0)
        scale = eta * (-1.0 / plan.L * multipliers)  # −gain·lr·η/L, one or (n,)
        cells = c.sq_sigma * xp.take(scale, c.sq_param) / norms
        cells = xp.where(xp.isfinite(cells), cells, 0.0)  # a zero cell: its source is zero
        ps = c.ps_sigma * xp.take(scale, c.ps_index)
    return Coefficients(eta, ok, cells, ps, scale)


def move(plan: Plan, params: list[Tensor], us: list[Tensor], directions: dict[int, Tensor],
         row_norms: list[Tensor], co: Coefficients, host: bool) -> None:
    """``W_c += c_c · source_c`` for every unit: ONE ``torch._foreach_addcmul_`` (rows: one
    ``addcmul_`` per embedding). On the device the sources are masked by ``ok``."""
    def src(t: Tensor) -> Tensor:  # 0·NaN must not reach the weights
        return t if host else torch.where(co.ok, t, 0.0)

    polar = [i for group in plan.polar for i in group.params]
    ps = [_narrow(params[u.param], u.select) for u in plan.whole] + \
        [params[i] for i in polar + list(plan.signs)]
    srcs = [src(_narrow(us[u.param], u.select)) for u in plan.whole] + \
        [directions[i] for i in polar]
    if plan.signs:
        srcs += torch._foreach_sign([src(us[i]) for i in plan.signs])
    n_whole = len(plan.whole)
    if host:
        scalars = co.cells[:n_whole].tolist() + co.ps.tolist()
        t2 = [plan.ones[i] for i in [u.param for u in plan.whole] + polar + list(plan.signs)]
    else:
        t2 = _unbind(torch.cat([co.cells[:n_whole], co.ps]), ps)
    if plan.patterns:
        cells = co.cells[n_whole:]
        tiled = cells[plan.host_consts.tile_index] if host else \
            cells.index_select(0, plan.consts.tile_index)
        rows = (torch.from_numpy(np.ascontiguousarray(tiled)) if host else tiled).split(
            [u.tiled[1] for u in plan.patterns])
        per_unit = np.split(cells, np.cumsum([u.K for u in plan.patterns])[:-1]) if host \
            else cells.split([u.K for u in plan.patterns])
        for u, row, c in zip(plan.patterns, rows, per_unit):
            x, g = _narrow(params[u.param], u.select), src(_narrow(us[u.param], u.select))
            if _seen(x, u) and _seen(g, u):
                ps.append(_pattern_view(x, u, u.tiled))
                srcs.append(_pattern_view(g, u, u.tiled))
                t2.append(row)
                if host:
                    scalars.append(1.0)
            else:  # a layout the plan did not see: a broadcast over the kernel positions
                c = torch.as_tensor(c, device=x.device)
                _by_group(x, u).addcmul_(_by_group(g, u), _group_cells(c, u).to(x.dtype))
    if ps:  # last read first: what the reductions read last is still in cache
        if host:
            torch._foreach_addcmul_(ps[::-1], srcs[::-1], t2[::-1], scalars[::-1])
        else:
            torch._foreach_addcmul_(ps[::-1], srcs[::-1], t2[::-1])
    for i, n in zip(plan.rows, row_norms):
        s = co.scale[i] if np.ndim(co.scale) else co.scale
        per_row = torch.where(n > 0, plan.sigma[i] * (float(s) if host else s) / n, 0.0)
        params[i].addcmul_(src(us[i]), per_row.unsqueeze(1).to(params[i].dtype))


def _pattern_view(x: Tensor, u: Any, shape: tuple[int, int]) -> Tensor:
    """A conv unit's slice (in the layout the plan saw) as its (M, P) or tiled view."""
    return (x if u.order is None else x.permute(u.order)).view(shape)


def _seen(x: Tensor, u: Any) -> bool:
    """Whether ``x`` has the layout the plan saw (else the update takes a generic path)."""
    return tuple(x.stride()) == u.strides and tuple(x.shape) == u.shape


def _unbind(values: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``values`` (n,) as n 0-dim tensors in the dtypes of ``like`` (one cast if uniform)."""
    dtype = like[0].dtype
    if all(t.dtype == dtype for t in like):
        return list((values if values.dtype == dtype else values.to(dtype)).unbind())
    return [v.to(t.dtype) for v, t in zip(values.unbind(), like)]
