r"""The ``fresh`` estimate of G (``preset.estimate == "fresh"``): one step's term ``F``.

``docs/agd-stability.md`` §4 derives it. The direction ``D`` of every cell comes from the
momentum of the previous steps, ``u = m_{t−1}``; the fresh gradient ``g_t`` is independent of it,
so ``⟨g_t, D⟩`` is an unbiased estimate of ``⟨∇ℓ, D⟩``, the first-order decrease the
majorisation needs, where ``⟨u, D(u)⟩ = ‖u‖†`` is inflated by the noise the direction aligns to:

.. code-block:: text

    F = (1/L) Σ_cells σ_c ⟨g_c, D_c⟩          D_c = u_c/‖u_c‖ (ℓ2 cells), U Vᵀ (polar), sign(u)

The local partial sums go into the step's one flat vector (so sharded parameters need no extra
collective), laid out as ``[ℓ2 whole and conv cells: ⟨g, u⟩ | sign params: ⟨g, sign u⟩ | row
params: Σ_rows ⟨g_r, u_r⟩/‖u_r‖ | polar params: ⟨g, D⟩]``; :func:`fresh_G` (device) and
:func:`fresh_G_host` divide the ℓ2 entries by the cells' reduced norms and weight every entry by
σ/L.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._plan import Plan, narrow

__all__ = ["fresh_dots", "fresh_G", "fresh_G_host"]


def _dot(a: Tensor, b: Tensor, acc: torch.dtype, dims: tuple[int, ...] | None = None
         ) -> Tensor:
    prod = a.to(acc) * b.to(acc)
    return prod.sum() if dims is None else prod.sum(dim=dims)


def fresh_dots(grads: list[Tensor], us: list[Tensor], plan: Plan,
               directions: dict[int, Tensor], row_norms: list[Tensor], acc: torch.dtype
               ) -> Tensor:
    """The local partial sums of ``F`` (module docstring's layout)."""
    out: list[Tensor] = []
    if plan.whole:
        out.append(torch.stack([_dot(narrow(grads[u.param], u.select),
                                     narrow(us[u.param], u.select), acc) for u in plan.whole]))
    for u in plan.patterns:  # one entry per kernel position, in the order of pattern_sq
        g, m = narrow(grads[u.param], u.select), narrow(us[u.param], u.select)
        out.append(_dot(g, m, acc, (0, 1)).flatten())
    if plan.sign:
        out.append(torch.stack([_dot(grads[i], torch.sign(us[i]), acc) for i in plan.sign]))
    if plan.row_params:
        out.append(torch.stack([
            torch.where(n > 0, _dot(grads[i], us[i], acc, (1,)) / n, 0.0).sum()
            for i, n in zip(plan.row_params, row_norms)]))
    polar = [i for group in plan.polar for i in group]
    if polar:
        out.append(torch.stack([_dot(grads[i], directions[i], acc) for i in polar]))
    return torch.cat(out)


def _linear_weights(plan: Plan) -> list[float]:
    """σ/L of the sign, row and polar entries."""
    polar = [i for group in plan.polar for i in group]
    return [plan.sigma[i] / plan.L for i in (*plan.sign, *plan.row_params, *polar)]


def prepare(plan: Plan) -> None:
    """Hold the weights σ/L of the sign, row and polar entries in ``plan`` (built with the plan,
    so that ``torch.compile`` does not see the plan change after its first step and recompile).
    """
    if "fresh_lin" not in plan.extra:
        plan.extra["fresh_lin"] = torch.tensor(_linear_weights(plan), dtype=plan.sigma_t.dtype,
                                               device=plan.sigma_t.device)


def fresh_G(fresh: Tensor, norms: Tensor, plan: Plan) -> Tensor:
    """``F`` from the reduced partial sums and the cells' reduced norms ``‖u_c‖`` (device);
    ``plan`` has been through :func:`prepare` (AGD does it when it builds the plan)."""
    n_sq = norms.shape[0]
    F = fresh.new_zeros(())
    if n_sq:
        F = F + torch.dot(plan.sq_sigma_L, torch.where(norms > 0, fresh[:n_sq] / norms, 0.0))
    if fresh.shape[0] > n_sq:
        F = F + torch.dot(plan.extra["fresh_lin"], fresh[n_sq:])
    return F


def fresh_G_host(fresh: list[float], norms: list[float], plan: Plan) -> float:
    """:func:`fresh_G` in Python floats (the host finish)."""
    sq = plan.host["sq_sigma_L"]
    F = math.fsum(s * v / n for s, v, n in zip(sq, fresh, norms) if n > 0)
    return F + math.fsum(w * v for w, v in zip(_linear_weights(plan), fresh[len(sq):]))
