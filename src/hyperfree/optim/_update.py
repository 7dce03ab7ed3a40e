"""The in-place pieces of AGD's fast step shared by its two finishes (device tensors in
:mod:`hyperfree.optim._foreach`, host floats in :mod:`hyperfree.optim._host`): the conv
cells' sums of squares, the list of tensors the update writes and reads, and the retraction.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._plan import Pattern, Plan, narrow, pattern_view

__all__ = ["Reduce", "pattern_sq", "layout_ok", "unbind_as", "targets", "pattern_targets",
           "retract_weights"]

Reduce = Callable[[Tensor], Tensor]  # sums partial reductions over the shards of a tensor

_CHUNK = 73728  # elements of the CPU column-sum accumulator (288 KiB in float32: it and the
#                 chunk streamed past it stay in a 1 MiB L2)


def _chunked() -> bool:
    """Stream conv column sums through cache-sized accumulators: eager CPU only (on CUDA the
    aliased accumulator list would race, and torch.compile would functionalise it away)."""
    return not torch.compiler.is_compiling()


def layout_ok(x: Tensor, u: Pattern) -> bool:
    return tuple(x.stride()) == u.strides and tuple(x.shape) == u.shape


def pattern_sq(ts: list[Tensor], pats: list[Pattern], acc: torch.dtype, plan: Plan
                ) -> Tensor:
    """``(Σ K,)``: the sum of squares of every kernel-position cell of every Pattern unit.

    On eager CPU each unit streams through ONE cache-sized accumulator kept by the plan (a
    strided ``vector_norm(dim=(0, 1))`` is 5–8× slower than the floor there; a fresh buffer per
    step would pay page faults): ``acc += chunk ⊙ chunk`` over 1-D chunks, then column sums."""
    xs = [narrow(ts[u.param], u.select) for u in pats]
    cpu = _chunked() and xs[0].device.type == "cpu"
    out = []
    for x, u in zip(xs, pats):
        if not layout_ok(x, u):  # a layout the plan did not see: a strided reduction
            out.append(torch.linalg.vector_norm(x, dim=(0, 1), dtype=acc).square().flatten())
            continue
        v = pattern_view(x, u)
        if cpu:
            rows = max(1, min(u.M, _CHUNK // u.P))
            a = _accumulator(plan, acc, x.device)[:rows * u.P].zero_()
            chunks = v.view(-1).split(rows * u.P)  # 1-D chunks: the inner loop vectorises
            torch._foreach_addcmul_([a if c.shape[0] == a.shape[0] else a[:c.shape[0]]
                                     for c in chunks], chunks, chunks)
            col = a.view(rows, u.P).sum(0)
        else:
            col = torch.linalg.vector_norm(v, dim=0, dtype=acc).square()
        out.append(col.view(u.K, u.inner).sum(1) if u.inner > 1 else col)
    return torch.cat(out) if len(out) > 1 else out[0]


def _accumulator(plan: Plan, acc: torch.dtype, device: torch.device) -> Tensor:
    """The plan's persistent CPU accumulator (allocated on first use)."""
    buf = plan.extra.get("accumulator")
    if buf is None:
        buf = plan.extra["accumulator"] = torch.empty(_CHUNK, dtype=acc, device=device)
    return buf


def unbind_as(values: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``values`` (n,) as n 0-dim tensors in the dtypes of ``like`` (one cast if uniform)."""
    dtype = like[0].dtype
    if all(t.dtype == dtype for t in like):
        return list((values if values.dtype == dtype else values.to(dtype)).unbind())
    return [v.to(t.dtype) for v, t in zip(values.unbind(), like)]


def targets(params: list[Tensor], us: list[Tensor], plan: Plan, directions: dict[int, Tensor],
            src: Callable[[Tensor], Tensor] | None) -> tuple[list[Tensor], list[Tensor], int]:
    """The tensors the update writes and reads, for every unit with ONE scalar coefficient:
    Whole units, then polar parameters, then sign parameters (``src`` masks ℓ2 / sign
    sources; None = as they are). Returns ``(ps, srcs, count)``."""
    ps = [narrow(params[u.param], u.select) for u in plan.whole]
    srcs = [narrow(us[u.param], u.select) for u in plan.whole]
    if src is not None:
        srcs = [src(t) for t in srcs]
    polar = [i for group in plan.polar for i in group]
    ps += [params[i] for i in polar + plan.sign]
    srcs += [directions[i] for i in polar]
    if plan.sign:
        signs = [us[i] for i in plan.sign]
        srcs += torch._foreach_sign(signs if src is None else [src(t) for t in signs])
    return ps, srcs, len(ps)


def pattern_targets(params: list[Tensor], us: list[Tensor], plan: Plan, tiled: Tensor,
                    cells: Tensor, ps: list[Tensor], srcs: list[Tensor],
                    src: Callable[[Tensor], Tensor] | None) -> list[Tensor]:
    """Append the (M/r, r·P) views of every Pattern unit to ``ps``/``srcs`` and return their
    coefficient rows (slices of ``tiled``, the cell coefficients spread by
    ``plan.tile_index``). A unit whose layout changed since the plan is updated here, by a
    broadcast of its ``cells`` over its kernel positions."""
    rows = tiled.split([u.r * u.P for u in plan.patterns])
    per_unit = cells.split([u.K for u in plan.patterns])
    out = []
    for u, t, c in zip(plan.patterns, rows, per_unit):
        x, g = narrow(params[u.param], u.select), narrow(us[u.param], u.select)
        if src is not None:
            g = src(g)
        if layout_ok(x, u) and layout_ok(g, u):
            ps.append(pattern_view(x, u, tiled=True))
            srcs.append(pattern_view(g, u, tiled=True))
            out.append(t)
        else:
            x.addcmul_(g, c.view(1, 1, *u.shape[2:]).to(x.dtype))
    return out


def retract_weights(params: list[Tensor], plan: Plan, how: str, reduce: Reduce | None,
             ok: Tensor | None = None) -> None:
    """Rescale every matrix block / conv slice / embedding row to its init norm ρ (``sphere``),
    or only those above it (``ball``); zero cells stay zero. One ``reduce`` for all norms.
    ``ok`` False (a skipped step under the device guard) makes every factor 1."""
    acc = plan.sigma_t.dtype
    sq = []
    if plan.retract_whole:
        views = [narrow(params[u.param], u.select) for u in plan.retract_whole]
        sq.append(torch.stack(torch._foreach_norm(views, dtype=acc)).square())
    if plan.retract_patterns:
        sq.append(pattern_sq(params, plan.retract_patterns, acc, plan))
    if sq:
        flat = torch.cat(sq)
        if reduce is not None:
            flat = reduce(flat)
        n = flat.sqrt()
        factor = plan.retract_rho / n
        factor = torch.where(n > 0, factor if how == "sphere" else factor.clamp(max=1.0), 1.0)
        if ok is not None:
            factor = torch.where(ok, factor, 1.0)
        n_whole = len(plan.retract_whole)
        ps = [narrow(params[u.param], u.select) for u in plan.retract_whole]
        scalars = unbind_as(factor[:n_whole], ps) if ps else []
        if plan.retract_patterns:
            tiled = factor[n_whole:].index_select(0, plan.retract_tile_index).split(
                [u.r * u.P for u in plan.retract_patterns])
            cells = factor[n_whole:].split([u.K for u in plan.retract_patterns])
            for u, t, c in zip(plan.retract_patterns, tiled, cells):
                x = narrow(params[u.param], u.select)
                if layout_ok(x, u):
                    ps.append(pattern_view(x, u, tiled=True))
                    scalars.append(t)
                else:
                    x.mul_(c.view(1, 1, *u.shape[2:]).to(x.dtype))
        if ps:
            torch._foreach_mul_(ps, scalars)
    for i in plan.retract_rows:  # embedding rows: whole on every shard, no reduce
        n = torch.linalg.vector_norm(params[i], dim=1, keepdim=True, dtype=acc)
        factor = plan.radius[i] / n
        factor = torch.where(n > 0, factor if how == "sphere" else factor.clamp(max=1.0), 1.0)
        if ok is not None:
            factor = torch.where(ok, factor, 1.0)
        params[i].mul_(factor.to(params[i].dtype))
