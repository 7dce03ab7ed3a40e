r"""The host twin of the end of AGD's fast step: scalars as Python floats (eager CPU).

:func:`hyperfree.optim._foreach.foreach_step` computes every partial sum of a step into one
flat tensor. On an accelerator (or under ``torch.compile``) it finishes with tensor ops: G, η
and every coefficient stay 0-dim tensors on the device, so nothing synchronises. On the CPU the
"device" is the host, and those ~15 tiny tensor ops cost more than reading the flat vector once
and doing the same arithmetic in Python: measured 0.08–0.10 of the ``_foreach_add_`` floor on
the FCN 8×1024 shapes (each tiny op after a 28 MB sweep pays cold caches; see
``docs/agd-speed.md``). So the host path reads ``flat`` (one ``tolist``), computes

.. code-block:: text

    ‖u_c‖ = √(flat_c)                 G = Σ σ_c/L·‖u_c‖ + Σ σ_c/L·flat_c (ℓ1 sums, ⟨u, D⟩)
    skip if G is not finite           η = log(½ + √(G + ¼))
    coefficient_c = −gain·lr·η/L · σ_c/‖u_c‖   (0 for a zero cell)   or −gain·lr·η/L · σ

in float64 and applies them with ONE ``torch._foreach_addcmul_(ps, srcs, ones, scalars)``.
It is the same formula as the device path; ``tests/optim/test_agd_speed.py`` proves the two
equal in float64 for every preset.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ._fresh import fresh_G_host
from ._plan import Plan
from ._update import pattern_targets, retract_weights, targets

__all__ = ["finish_host"]


def finish_host(params: list[Tensor], us: list[Tensor], plan: Plan, flat: Tensor,
                row_norms: list[Tensor], directions: dict[int, Tensor], multipliers: Any,
                bias_correction: Tensor | None, retract: str | None, reduce: Any,
                fresh: Tensor | None = None, g_hat: Any = None) -> tuple[Tensor, bool]:
    """Finish :func:`~hyperfree.optim._foreach.foreach_step` with Python floats; returns
    ``(η as a 0-dim tensor, ok)``. ``fresh``/``g_hat``: the fresh estimate of G."""
    h = plan.host
    vals = flat.tolist()
    n_sq = len(h["sq_sigma_L"])
    norms = [math.sqrt(v) for v in vals[:n_sq]]
    G = math.fsum(s * n for s, n in zip(h["sq_sigma_L"], norms)) + \
        math.fsum(s * v for s, v in zip(h["lin_sigma_L"], vals[n_sq:]))
    if bias_correction is not None:
        G *= float(bias_correction)
    dtype = params[0].dtype
    if fresh is not None and math.isfinite(G):
        F = fresh_G_host(fresh.tolist(), norms, plan)
        G = float(g_hat(torch.tensor(F, dtype=torch.float64), None)) if math.isfinite(F) \
            else F
    if not math.isfinite(G):
        return torch.zeros((), dtype=dtype, device=params[0].device), False
    eta = math.log(0.5 + math.sqrt(G + 0.25))  # = log((1 + √(1 + 4G)) / 2)
    mult = multipliers.tolist() if isinstance(multipliers, Tensor) else multipliers
    per_param = isinstance(mult, list)
    scale = [-eta / plan.L * m for m in mult] if per_param else -eta / plan.L * float(mult)

    def s_of(i: int) -> float:
        return scale[i] if per_param else scale

    coef_sq = [sig * s_of(i) / n if n > 0 else 0.0
               for sig, n, i in zip(h["sq_sigma"], norms, h["sq_param"])]
    n_whole = len(plan.whole)
    ps, srcs, n_scalar = targets(params, us, plan, directions, None)
    scalars = coef_sq[:n_whole] + [sig * s_of(i) for sig, i in zip(h["ps_sigma"],
                                                                    h["ps_index"])]
    t2: list[Tensor] = [_one(plan, dtype, params[0].device)] * n_scalar
    if plan.patterns:
        cells = coef_sq[n_whole:]
        tiled = torch.tensor([cells[j] for j in h["tile_index"]], dtype=plan.sigma_t.dtype,
                             device=params[0].device)
        tiles = pattern_targets(params, us, plan, tiled, torch.tensor(cells, dtype=tiled.dtype),
                                ps, srcs, None)
        t2 += tiles
        scalars += [1.0] * len(tiles)
    if ps:  # last read first: what the reductions read last is still in cache
        torch._foreach_addcmul_(ps[::-1], srcs[::-1], t2[::-1], scalars[::-1])
    for i, n in zip(plan.row_params, row_norms):
        per_row = torch.where(n > 0, plan.sigma[i] * s_of(i) / n, 0.0)
        params[i].addcmul_(us[i], per_row.unsqueeze(1).to(params[i].dtype))
    if retract is not None:
        retract_weights(params, plan, retract, reduce)
    return torch.tensor(eta, dtype=dtype, device=params[0].device), True


def _one(plan: Plan, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-dim 1 of ``dtype``: the second factor of ``addcmul`` for scalar coefficients."""
    key = ("one", dtype)
    one = plan.extra.get(key)
    if one is None:
        one = plan.extra[key] = torch.ones((), dtype=dtype, device=device)
    return one
