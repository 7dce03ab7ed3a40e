r"""AGD's fast step: foreach reductions, batched Newton–Schulz, in-place updates, no host sync.

Same algorithm as :mod:`hyperfree.optim._reference` (its docstring has the box; the rule of
each kind is in :mod:`hyperfree.optim.rules`), organised for speed around a
:class:`~hyperfree.optim._plan.Plan` (built once per parameter layout, held by the optimiser):

.. code-block:: text

    partial sums   ONE torch._foreach_norm over every Whole unit; Pattern units (conv slices)
                   as column sums of an (M, P) view (on CPU: streamed through cache-sized
                   accumulators by ONE torch._foreach_addcmul_); ℓ1 of sign units (one foreach);
                   row norms of embeddings; ⟨u, D⟩ of every Newton–Schulz matrix (one batched
                   iteration per shape group)
    flat           all of it in ONE flat vector -> reduce(flat) (an all-reduce over shards;
                   identity when nothing is sharded) -> √ of the sums of squares
    G, η           two dot products with the plan's σ vectors; η = log(½ + √(G + ¼))
    update         ONE torch._foreach_addcmul_ for every unit: 0-dim coefficients for Whole /
                   polar / sign units, tiled (r·P,) coefficient rows for Pattern units

Every scalar stays a 0-dim tensor, so a step issues no host synchronisation and
``torch.compile`` captures it as one graph. A non-finite ``G`` skips the step: ``guard="host"``
decides on the host (free on CPU); ``guard="device"`` decides on the device without a sync:
η and every coefficient become 0 and the ℓ2 and sign sources are read through
``torch.where(ok, u, 0)`` so that ``0·NaN`` cannot reach the weights (one extra read of the
gradients in eager mode; fused into the update under ``torch.compile``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from . import rules
from ._plan import Pattern, Plan, Whole, acc_dtype, build_plan, narrow, pattern_view
from .newton_schulz import batched_dot, ns_dtype, orthogonalize

__all__ = ["Plan", "Reduce", "Polar", "build_plan", "foreach_step", "acc_dtype"]

Reduce = Callable[[Tensor], Tensor]  # sums partial reductions over the shards of a tensor
#: Newton–Schulz of every polar parameter: ``(us, plan, guard, ns_steps, ns_dtype) ->
#: (directions {param: D of the local tensor}, ⟨u, D⟩ of every matrix in plan order, weighted
#: so that the reduce hook sums them to the global values)``
Polar = Callable[..., tuple[dict[int, Tensor], Tensor]]

_CHUNK = 73728  # elements of the CPU column-sum accumulator (288 KiB in float32: it and the
#                 chunk streamed past it stay in a 1 MiB L2)


def _chunked() -> bool:
    """Stream conv column sums through cache-sized accumulators: eager CPU only (on CUDA the
    aliased accumulator list would race, and torch.compile would functionalise it away)."""
    return not torch.compiler.is_compiling()


def _layout_ok(x: Tensor, u: Pattern) -> bool:
    return tuple(x.stride()) == u.strides and tuple(x.shape) == u.shape


def _pattern_sq(ts: list[Tensor], pats: list[Pattern], acc: torch.dtype, plan: Plan
                ) -> Tensor:
    """``(Σ K,)``: the sum of squares of every kernel-position cell of every Pattern unit.

    On eager CPU each unit streams through ONE cache-sized accumulator kept by the plan (a
    strided ``vector_norm(dim=(0, 1))`` is 5–8× slower than the floor there; a fresh buffer per
    step would pay page faults): ``acc += chunk ⊙ chunk`` over 1-D chunks, then column sums."""
    xs = [narrow(ts[u.param], u.select) for u in pats]
    cpu = _chunked() and xs[0].device.type == "cpu"
    out = []
    for x, u in zip(xs, pats):
        if not _layout_ok(x, u):  # a layout the plan did not see: a strided reduction
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


def _polar(us: list[Tensor], plan: Plan, guard: str, ns_steps: int,
           ns_dtype_: torch.dtype | None) -> tuple[dict[int, Tensor], Tensor]:
    """Newton–Schulz on every shape group of unsharded matrices; returns the directions and
    ``⟨u_b, D_b⟩`` of every matrix (NaN for a group whose input was not finite)."""
    directions: dict[int, Tensor] = {}
    dots = []
    for group in plan.polar:
        dots.append(_polar_group(us, plan, group, directions, guard, ns_steps, ns_dtype_))
    return directions, torch.cat(dots)


def _polar_group(us: list[Tensor], plan: Plan, group: tuple[int, ...],
                 directions: dict[int, Tensor], guard: str, ns_steps: int,
                 ns_dtype_: torch.dtype | None) -> Tensor:
    acc = plan.sigma_t.dtype
    mats = torch.cat([rules.as_matrices(us[i], plan.kinds[i]) for i in group])
    bad = None
    if guard == "device":  # NS of a NaN is NaN: sanitise the (already copied) stack instead
        bad = ~torch.isfinite(torch.linalg.vector_norm(mats, dtype=acc))
        mats = torch.nan_to_num(mats, nan=0.0, posinf=0.0, neginf=0.0)
    D = orthogonalize(mats, steps=ns_steps, dtype=ns_dtype_ or ns_dtype(mats.dtype))
    dots = batched_dot(mats, D, acc)  # ⟨u_b, D_b⟩
    start = 0
    for i in group:
        n = rules.matrix_dims(plan.shapes[i], plan.kinds[i])[0]
        directions[i] = rules.from_matrices(D[start:start + n], plan.shapes[i], plan.kinds[i])
        start += n
    return dots if bad is None else torch.where(bad, math.nan, dots)


@torch.no_grad()
def foreach_step(params: list[Tensor], us: list[Tensor], plan: Plan, *,
                 multipliers: Tensor | float, bias_correction: Tensor | None, guard: str,
                 ns_steps: int = 5, ns_dtype_: torch.dtype | None = None,
                 retract: str | None = None, reduce: Reduce | None = None,
                 polar: Polar | None = None, finite: Tensor | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Move ``params`` by AGD along ``us`` (the gradients, or the momentum buffers).

    ``params``/``us`` are the local tensors the plan was built for. ``multipliers`` is
    ``gain·lr``: one number (or 0-dim tensor) for every parameter, or an ``(n,)`` tensor.
    ``bias_correction`` (0-dim, or None) multiplies ``G`` when ``us`` are raw momentum buffers
    ``m`` (their estimate is ``m/(1−β^t)``; every direction is scale-free). Every reduction of
    the step goes into ONE flat vector passed once through ``reduce`` before any square root;
    ``polar`` replaces the Newton–Schulz of unsharded matrices (see :mod:`._distributed`).
    ``finite`` (0-dim bool, device guard) also gates the step (the gradients' flag when ``us``
    are momentum buffers). Returns ``(η, ok)`` as device tensors: η is 0 when the step was skipped.
    """
    acc = plan.sigma_t.dtype
    parts: list[Tensor] = []  # sums of squares first, then the terms that are not squared
    if plan.whole:
        views = [narrow(us[u.param], u.select) for u in plan.whole]
        parts.append(torch.stack(torch._foreach_norm(views, dtype=acc)).square())
    if plan.patterns:
        parts.append(_pattern_sq(us, plan.patterns, acc, plan))
    if plan.sign:
        parts.append(torch.stack(torch._foreach_norm([us[i] for i in plan.sign], ord=1,
                                                     dtype=acc)))
    row_norms = [torch.linalg.vector_norm(us[i], dim=1, dtype=acc) for i in plan.row_params]
    if row_norms:  # rows are never split between shards: their norms are final here
        parts.append(torch.stack([n.sum() for n in row_norms]))
    directions: dict[int, Tensor] = {}
    if plan.polar:
        directions, dots = (polar or _polar)(us, plan, guard, ns_steps, ns_dtype_)
        parts.append(dots)
    flat = torch.cat(parts) if len(parts) > 1 else parts[0]
    if reduce is not None:
        flat = reduce(flat)
    if guard == "host":
        from ._host import finish_host  # noqa: PLC0415  (the host twin of the code below)

        return finish_host(params, us, plan, flat, row_norms, directions, multipliers,
                           bias_correction, retract, reduce)
    n_sq = plan.sq_sigma.shape[0]
    norms = flat[:n_sq].sqrt() if n_sq < flat.shape[0] else flat.sqrt()
    G = torch.dot(plan.sq_sigma_L, norms) if n_sq else None  # σ/L · ‖u‖
    if n_sq < flat.shape[0]:
        lin = torch.dot(plan.lin_sigma_L, flat[n_sq:])
        G = lin if G is None else G + lin
    if bias_correction is not None:
        G = G * bias_correction
    ok = torch.isfinite(G) if finite is None else torch.isfinite(G) & finite
    eta = torch.where(ok, G.add(0.25).sqrt_().add_(0.5).log_(), 0.0)  # log((1 + √(1+4G))/2)
    scale = eta * (-1.0 / plan.L * multipliers)  # −gain·lr·η/L, one or (n,)
    per_param = scale.dim() > 0
    # σ·scale/‖u‖; a zero cell (0/0, or x/0) gets 0: its source is zero anyway
    coef_sq = torch.nan_to_num_((plan.sq_sigma * (scale.index_select(0, plan.sq_param_t)
                                                  if per_param else scale)).div_(norms),
                                nan=0.0, posinf=0.0, neginf=0.0)
    n_whole = len(plan.whole)
    scalars = [coef_sq[:n_whole]] if n_whole else []  # in the order of targets()
    if plan.ps_index_t.shape[0]:
        scalars.append(plan.ps_sigma * (scale.index_select(0, plan.ps_index_t)
                                        if per_param else scale))

    def src(t: Tensor) -> Tensor:  # 0·NaN must not reach the weights
        return torch.where(ok, t, 0.0)

    ps, srcs, n_scalar = targets(params, us, plan, directions, src)
    coefs = _unbind_as(torch.cat(scalars) if len(scalars) > 1 else scalars[0], ps[:n_scalar]) \
        if scalars else []
    if plan.patterns:
        cells = coef_sq[n_whole:]
        coefs += pattern_targets(params, us, plan, cells.index_select(0, plan.tile_index),
                                 cells, ps, srcs, src)
    if ps:  # last read first: what the reductions read last is still in cache
        torch._foreach_addcmul_(ps[::-1], srcs[::-1], coefs[::-1])
    for i, n in zip(plan.row_params, row_norms):
        per_row = torch.where(n > 0, plan.sigma[i] / n, 0.0) * (scale[i] if per_param else scale)
        params[i].addcmul_(src(us[i]), per_row.unsqueeze(1).to(params[i].dtype))
    if retract is not None:
        _retract(params, plan, retract, reduce, ok)
    return (eta if eta.dtype == params[0].dtype else eta.to(params[0].dtype)), ok


def _unbind_as(values: Tensor, like: list[Tensor]) -> list[Tensor]:
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
        if _layout_ok(x, u) and _layout_ok(g, u):
            ps.append(pattern_view(x, u, tiled=True))
            srcs.append(pattern_view(g, u, tiled=True))
            out.append(t)
        else:
            x.addcmul_(g, c.view(1, 1, *u.shape[2:]).to(x.dtype))
    return out


def _retract(params: list[Tensor], plan: Plan, how: str, reduce: Reduce | None,
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
        sq.append(_pattern_sq(params, plan.retract_patterns, acc, plan))
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
        scalars = _unbind_as(factor[:n_whole], ps) if ps else []
        if plan.retract_patterns:
            tiled = factor[n_whole:].index_select(0, plan.retract_tile_index).split(
                [u.r * u.P for u in plan.retract_patterns])
            cells = factor[n_whole:].split([u.K for u in plan.retract_patterns])
            for u, t, c in zip(plan.retract_patterns, tiled, cells):
                x = narrow(params[u.param], u.select)
                if _layout_ok(x, u):
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
