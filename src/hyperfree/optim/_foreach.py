r"""AGD's fast step: foreach reductions, batched Newton–Schulz, in-place updates, no host sync.

Same algorithm as :mod:`hyperfree.optim._reference` (its docstring has the box; the rule of
each kind is in :mod:`hyperfree.optim.rules`), organised for speed:

* a :class:`Plan`, built once per parameter layout and held by the optimiser, sorts the
  parameters by how their cells are normalised — ``whole`` (one ℓ2 cell per tensor: Linear,
  biases, gains and embeddings of the frobenius family), ``cells`` (several ℓ2 cells: conv
  slices, packed blocks, embedding rows), ``polar`` (Newton–Schulz, grouped by matrix shape)
  and ``sign`` (gains of the spectral family) — and keeps σ and the index vectors on the
  device, so a step copies nothing from the host;
* norms come from one ``torch._foreach_norm`` per group (plus one strided reduction per
  multi-cell tensor), Newton–Schulz runs once per shape group on the stacked matrices, every
  scalar (G, η, the coefficients) stays a tensor on the device, and the update is in-place
  ``addcmul_`` (``torch._foreach_addcmul_``) with no full-size temporary for ℓ2 kinds;
* a non-finite ``G`` skips the step. ``guard="host"`` decides on the host (free on CPU);
  ``guard="device"`` decides on the device without a sync: η and every coefficient become 0
  and the ℓ2 kinds read their source through ``torch.where(ok, u, 0)`` (so that ``0·NaN`` cannot
  reach the weights; that read is the price of not synchronising).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from . import rules
from .kinds import Kind
from .newton_schulz import ns_dtype, orthogonalize

__all__ = ["Plan", "Reduce", "build_plan", "foreach_step", "acc_dtype"]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of norms and scalars: float32 for 16/32-bit tensors (‖g‖² of a
    float16 gradient would overflow in float16), float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-layout constants: which parameter goes where, σ and init radii (host and device)."""

    family: str
    kinds: tuple[Kind, ...]
    whole: tuple[int, ...]
    cells: tuple[int, ...]
    polar: tuple[tuple[int, ...], ...]  # groups sharing (d_out, d_in, dtype)
    sign: tuple[int, ...]
    sigma: tuple[float, ...]
    radius: tuple[float | None, ...]
    sigma_t: Tensor  # (n,) σ on the device, accumulation dtype
    whole_t: Tensor  # index vectors on the device
    sign_t: Tensor


def _single_cell(shape: Sequence[int], kind: Kind, family: str) -> bool:
    if kind.name in ("conv", "conv_transpose"):
        return kind.groups == 1 and math.prod(shape[2:]) == 1
    if kind.name == "embedding":
        return family != "spectral"
    return kind.blocks == 1


def build_plan(params: Sequence[Tensor], kinds: Sequence[Kind], family: str) -> Plan:
    """Sort ``params`` (by index) into the step's groups and put the constants on the device."""
    whole, cells, sign = [], [], []
    polar: dict[tuple, list[int]] = {}
    for i, (p, kind) in enumerate(zip(params, kinds)):
        how = rules.direction(kind, family)
        if how == "polar":
            _, d_out, d_in = rules.matrix_dims(p.shape, kind)
            polar.setdefault((d_out, d_in, p.dtype), []).append(i)
        elif how == "sign":
            sign.append(i)
        elif _single_cell(p.shape, kind, family):
            whole.append(i)
        else:
            cells.append(i)
    dev, acc = params[0].device, acc_dtype(params[0].dtype)
    sigma = tuple(rules.scale(p.shape, k) for p, k in zip(params, kinds))

    def index(ix: list[int]) -> Tensor:
        return torch.tensor(ix, dtype=torch.long, device=dev)

    return Plan(family, tuple(kinds), tuple(whole), tuple(cells),
                tuple(tuple(v) for v in polar.values()), tuple(sign), sigma,
                tuple(rules.radius(p.shape, k) for p, k in zip(params, kinds)),
                torch.tensor(sigma, dtype=acc, device=dev), index(whole), index(sign))


def _unbind_as(values: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``values`` (n,) as n 0-dim tensors in the dtypes of ``like`` (one cast if uniform)."""
    dtypes = {t.dtype for t in like}
    if len(dtypes) == 1:
        return list(values.to(dtypes.pop()).unbind())
    return [v.to(t.dtype) for v, t in zip(values.unbind(), like)]


Reduce = Callable[[Tensor], Tensor]  # sums partial reductions over the shards of a tensor


@torch.no_grad()
def foreach_step(params: list[Tensor], us: list[Tensor], plan: Plan, *, L: float,
                 multipliers: Tensor, bias_correction: Tensor | None, guard: str,
                 ns_steps: int = 5, ns_dtype_: torch.dtype | None = None,
                 retract: str | None = None, reduce: Reduce | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Move ``params`` by AGD along ``us`` (the gradients, or the momentum buffers).

    ``multipliers`` (n,) is ``gain·lr`` of every parameter (device, accumulation dtype);
    ``bias_correction`` (0-dim, or None) multiplies ``G`` when ``us`` are raw momentum buffers
    ``m`` (their estimate is ``m/(1−β^t)``; every direction is scale-free). Every reduction the
    step needs (sums of squares per cell, ℓ1 sums, ⟨u, D⟩) is computed locally into ONE flat
    vector and passed through ``reduce`` once (e.g. an all-reduce over the shards of sharded
    parameters; identity by default) before any square root is taken. Returns ``(η, ok)`` as
    device tensors: η is 0 when the step was skipped, ``ok`` says whether ``G`` was finite.
    """
    acc = plan.sigma_t.dtype
    local: list[Tensor] = []  # flat partial sums, reduced together
    cell_shapes: list[torch.Size] = []
    if plan.whole:
        local.append(torch.stack(torch._foreach_norm([us[i] for i in plan.whole], dtype=acc))
                     .square())
    for i in plan.cells:
        view, dims = rules.cells(us[i], plan.kinds[i], plan.family)
        sq = torch.linalg.vector_norm(view, dim=dims, keepdim=True, dtype=acc).square()
        cell_shapes.append(sq.shape)
        local.append(sq.reshape(-1))
    if plan.sign:
        local.append(torch.stack(torch._foreach_norm([us[i] for i in plan.sign], ord=1,
                                                     dtype=acc)))
    directions: dict[int, Tensor] = {}
    for group in plan.polar:
        local.append(_polar(us, plan, group, directions, guard, ns_steps, ns_dtype_))
    flat = torch.cat(local)
    if reduce is not None:
        flat = reduce(flat)
    pieces = iter(flat.split([t.numel() for t in local]))
    whole_n = next(pieces).sqrt() if plan.whole else None
    cells_n = [next(pieces).sqrt().view(shape) for shape in cell_shapes]
    parts: list[Tensor] = []  # pieces of L·G
    if whole_n is not None:
        parts.append(torch.dot(plan.sigma_t.index_select(0, plan.whole_t), whole_n))
    parts += [plan.sigma[i] * n.sum() for i, n in zip(plan.cells, cells_n)]
    if plan.sign:
        parts.append(torch.dot(plan.sigma_t.index_select(0, plan.sign_t), next(pieces)))
    for group in plan.polar:
        dots = next(pieces)  # ⟨u_b, D_b⟩ of every matrix of the group
        weights = torch.cat([dots.new_full((rules.matrix_dims(us[i].shape, plan.kinds[i])[0],),
                                           plan.sigma[i]) for i in group])
        parts.append(torch.dot(weights, dots))
    G = torch.stack(parts).sum() / L
    if bias_correction is not None:
        G = G * bias_correction
    ok = torch.isfinite(G)
    if guard == "host" and not bool(ok):
        return G.new_zeros(()).to(params[0].dtype), ok
    eta = torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)
    if guard == "device":
        eta = torch.where(ok, eta, 0.0)
    step = (-eta / L) * multipliers * plan.sigma_t  # −gain·lr·(η/L)·σ per parameter
    _update(params, us, plan, step, whole_n, cells_n, directions, ok if guard == "device" else None)
    if retract is not None:
        _retract(params, plan, retract, reduce)
    return eta.to(params[0].dtype), ok


def _polar(us: list[Tensor], plan: Plan, group: tuple[int, ...], directions: dict[int, Tensor],
           guard: str, ns_steps: int, ns_dtype_: torch.dtype | None) -> Tensor:
    """Newton–Schulz on one shape group; fills ``directions``; returns ``⟨u_b, D_b⟩`` of every
    matrix of the group (NaN everywhere if the group's input was not finite)."""
    acc = plan.sigma_t.dtype
    mats = torch.cat([rules.as_matrices(us[i], plan.kinds[i]) for i in group])
    bad = None
    if guard == "device":  # NS of a NaN is NaN: sanitise the (already copied) stack instead
        bad = ~torch.isfinite(torch.linalg.vector_norm(mats, dtype=acc))
        mats = torch.nan_to_num(mats, nan=0.0, posinf=0.0, neginf=0.0)
    D = orthogonalize(mats, steps=ns_steps, dtype=ns_dtype_ or ns_dtype(mats.dtype))
    dots = torch.linalg.vecdot(mats.flatten(1).to(acc), D.flatten(1).to(acc))  # ⟨u_b, D_b⟩
    start = 0
    for i in group:
        n = rules.matrix_dims(us[i].shape, plan.kinds[i])[0]
        directions[i] = rules.from_matrices(D[start:start + n], us[i].shape, plan.kinds[i])
        start += n
    return dots if bad is None else torch.where(bad, math.nan, dots)


def _update(params: list[Tensor], us: list[Tensor], plan: Plan, step: Tensor,
            whole_n: Tensor | None, cells_n: list[Tensor], directions: dict[int, Tensor],
            ok: Tensor | None) -> None:
    """``W ← W + step·D`` for every cell; ``ok`` (device guard) masks the ℓ2 sources."""
    def src(t: Tensor) -> Tensor:
        return t if ok is None else torch.where(ok, t, 0.0)

    if plan.whole:
        idx = list(plan.whole)
        coef = step.index_select(0, plan.whole_t)
        coef = torch.where(whole_n > 0, coef / whole_n, 0.0)
        ps = [params[i] for i in idx]
        torch._foreach_addcmul_(ps, [src(us[i]) for i in idx], _unbind_as(coef, ps))
    for i, n in zip(plan.cells, cells_n):
        view_p, _ = rules.cells(params[i], plan.kinds[i], plan.family)
        view_u, _ = rules.cells(src(us[i]), plan.kinds[i], plan.family)
        view_p.addcmul_(view_u, torch.where(n > 0, step[i] / n, 0.0).to(params[i].dtype))
    polar = [i for group in plan.polar for i in group]
    if polar:
        ps = [params[i] for i in polar]
        torch._foreach_addcmul_(ps, [directions[i] for i in polar],
                                _unbind_as(torch.stack([step[i] for i in polar]), ps))
    if plan.sign:
        ps = [params[i] for i in plan.sign]
        signs = torch._foreach_sign([src(us[i]) for i in plan.sign])
        torch._foreach_addcmul_(ps, signs, _unbind_as(step.index_select(0, plan.sign_t), ps))


def _retract(params: list[Tensor], plan: Plan, how: str, reduce: Reduce | None) -> None:
    """Rescale every matrix block / conv slice / embedding row to its init norm ρ (``sphere``),
    or only those above it (``ball``); zero cells stay zero. One ``reduce`` for all norms."""
    idx = [i for i in range(len(params)) if plan.radius[i] is not None]
    if not idx:
        return
    views, sqs = [], []
    for i in idx:
        kind = plan.kinds[i]
        view, dims = rules.cells(params[i], kind,
                                 "spectral" if kind.name == "embedding" else "frobenius")
        views.append(view)
        sqs.append(torch.linalg.vector_norm(view, dim=dims, keepdim=True,
                                            dtype=plan.sigma_t.dtype).square())
    flat = torch.cat([q.reshape(-1) for q in sqs])
    if reduce is not None:
        flat = reduce(flat)
    for i, view, q, n in zip(idx, views, sqs, flat.split([q.numel() for q in sqs])):
        n = n.sqrt().view(q.shape)
        rho = plan.radius[i]
        factor = rho / n if how == "sphere" else (rho / n).clamp(max=1.0)
        view.mul_(torch.where(n > 0, factor, 1.0).to(view.dtype))
