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
from ._plan import Plan, acc_dtype, build_plan, narrow
from ._fresh import fresh_G, fresh_dots
from ._update import Reduce, pattern_sq, pattern_targets, retract_weights, targets, unbind_as
from .newton_schulz import batched_dot, ns_dtype, orthogonalize

__all__ = ["Plan", "Reduce", "Polar", "build_plan", "foreach_step", "acc_dtype"]

#: ``g_hat(F, ok) -> G``: the preset's running estimate of G from this step's fresh term ``F``
#: (``ok``: whether the step is finite; a skipped step must leave the estimate alone)
GHat = Callable[[Tensor, Tensor | None], Tensor]
#: Newton–Schulz of every polar parameter: ``(us, plan, guard, ns_steps, ns_dtype) ->
#: (directions {param: D of the local tensor}, ⟨u, D⟩ of every matrix in plan order, weighted
#: so that the reduce hook sums them to the global values)``
Polar = Callable[..., tuple[dict[int, Tensor], Tensor]]

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
                 polar: Polar | None = None, finite: Tensor | None = None,
                 fresh: list[Tensor] | None = None, g_hat: GHat | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Move ``params`` by AGD along ``us`` (the gradients, or the momentum buffers).

    ``params``/``us`` are the local tensors the plan was built for. ``multipliers`` is
    ``gain·lr``: one number (or 0-dim tensor) for every parameter, or an ``(n,)`` tensor.
    ``bias_correction`` (0-dim, or None) multiplies ``G`` when ``us`` are raw momentum buffers
    ``m`` (their estimate is ``m/(1−β^t)``; every direction is scale-free). Every reduction of
    the step goes into ONE flat vector passed once through ``reduce`` before any square root;
    ``polar`` replaces the Newton–Schulz of unsharded matrices (see :mod:`._distributed`).
    ``finite`` (0-dim bool, device guard) also gates the step (the gradients' flag when ``us``
    are momentum buffers). ``fresh`` (the gradients, with ``us`` the momentum of the previous
    steps) switches ``G`` to the fresh estimate: ``F = Σ σ/L·⟨g, D(u)⟩`` goes through the same
    single ``reduce`` and ``g_hat(F, ok)`` returns the ``G`` to use (the preset's average).
    Returns ``(η, ok)`` as device tensors: η is 0 when the step was skipped.
    """
    acc = plan.sigma_t.dtype
    parts: list[Tensor] = []  # sums of squares first, then the terms that are not squared
    if plan.whole:
        views = [narrow(us[u.param], u.select) for u in plan.whole]
        parts.append(torch.stack(torch._foreach_norm(views, dtype=acc)).square())
    if plan.patterns:
        parts.append(pattern_sq(us, plan.patterns, acc, plan))
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
    n_main = sum(t.shape[0] for t in parts)
    if fresh is not None:
        parts.append(fresh_dots(fresh, us, plan, directions, row_norms, acc))
    flat = torch.cat(parts) if len(parts) > 1 else parts[0]
    if reduce is not None:
        flat = reduce(flat)
    flat, fresh_flat = (flat[:n_main], flat[n_main:]) if fresh is not None else (flat, None)
    if guard == "host":
        from ._host import finish_host  # noqa: PLC0415  (the host twin of the code below)

        return finish_host(params, us, plan, flat, row_norms, directions, multipliers,
                           bias_correction, retract, reduce, fresh_flat, g_hat)
    n_sq = plan.sq_sigma.shape[0]
    norms = flat[:n_sq].sqrt() if n_sq < flat.shape[0] else flat.sqrt()
    G = torch.dot(plan.sq_sigma_L, norms) if n_sq else None  # σ/L · ‖u‖
    if n_sq < flat.shape[0]:
        lin = torch.dot(plan.lin_sigma_L, flat[n_sq:])
        G = lin if G is None else G + lin
    if bias_correction is not None:
        G = G * bias_correction
    ok = torch.isfinite(G) if finite is None else torch.isfinite(G) & finite
    if fresh_flat is not None:
        F = fresh_G(fresh_flat, norms[:n_sq] if n_sq else norms[:0], plan)
        ok = ok & torch.isfinite(F)
        G = g_hat(F, ok)
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
    coefs = unbind_as(torch.cat(scalars) if len(scalars) > 1 else scalars[0], ps[:n_scalar]) \
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
        retract_weights(params, plan, retract, reduce, ok)
    return (eta if eta.dtype == params[0].dtype else eta.to(params[0].dtype)), ok
