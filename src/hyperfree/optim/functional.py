r"""Automatic Gradient Descent, the step: one pure function for every preset.

Bernstein, Mingard, Huang, Azizan, Yue, *Automatic Gradient Descent: Deep Learning without
Hyperparameters*, arXiv:2304.05187 (2023), Algorithm 1, extended to every parameter kind
(``docs/agd-rules.md``) and to the presets of :mod:`hyperfree.optim.presets`. In the code's
symbols (a preset names one piece per slot, :mod:`hyperfree.optim.pieces`; the plan holds each
cell's σ, its unit direction map D and L = Σ mass, :mod:`hyperfree.optim.rules`; a preset with
``forks`` has σ_c = σ(kind) · √2^forks in G and the update, ``docs/agd-stability.md`` §10; with
``streams`` too, the update's σ_c is σ(kind) · √terms, the terms of the residual stream the
tensor's branch joins, §16):

.. code-block:: text

    intake      finite = every gradient finite (momentum sources; otherwise G decides)
                if not finite: skip the step (weights, momentum and estimate untouched)
    source      u = g                                         (Gradient)
                m ← β m + (1−β) g,  k ← k + 1,  u = m,  b = 1/(1−β^k)  (Momentum; a lagged
                estimate takes the gradient only at the end, so u = m_{t−1})
    terms       per cell c: D_c = D(u_c)  (u_c/‖u_c‖ | U Vᵀ by Newton–Schulz | sign u_c | rows)
                (``lazy_rows``: an embedding row whose gradient row g_r is 0 has u_r
                taken as 0 here: no term, no move; its momentum is kept)
                G_self = (1/L) Σ_c σ_c ⟨u_c, D_c⟩ · b
                F      = (1/L) Σ_c σ_c ⟨g_c, D_c⟩              (Fresh only)
    G           SelfEstimate: G = G_self
                Fresh(β): H ← β H + (1−β) F  (if k > 0),  G = max(0, H/(1−β^k))
    η           η = log((1 + sqrt(1 + 4G)) / 2);  skip if G is not finite
    update      W_c ← W_c − gain · lr · (η/L) · σ_c · D_c     for every cell c
                (``head``: a head's ``gain · lr`` × clamp(1/ρ, 1, L), ρ its input's RMS,
                in ``multipliers`` from the class, :mod:`._head`)
    retraction  W_c ← W_c · factor  (Sphere: ρ/‖W‖; Ball: min(1, ρ/‖W‖);
                Rotation: √((‖W_c‖² − ‖Δ_c‖²)/‖W_c‖²), Δ_c the cell's move)
    average     (PolyAverage; by the optimiser, over every parameter, stepped or not)
                k ← k + 1,  x ← x + (γ+1)/(k+γ) · (W − x)    if the step was taken
    source      (lagged estimate) m ← β m + (1−β) g,  k ← k + 1

``gain`` is the paper's dimensionless multiplier (default 1); ``lr`` (default 1) multiplies the
step too and exists for learning-rate schedulers: leave it at 1 for AGD as derived. Units:
every cell moves by ``gain·lr·η/L`` of its target scale σ, in the norm of its kind.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

import numpy as np

from ._kernels import Polar, move, partial_sums, step_size
from ._plan import Plan
from ._retract import Move, retract

__all__ = ["agd", "Shards"]


class Shards(NamedTuple):
    """How a step of sharded parameters (FSDP2) reaches the other shards
    (:class:`~._distributed.ShardedStep`): ``reduce`` sums the step's one flat vector of
    partial sums over the shards (one all-reduce), ``polar`` orthogonalises their matrices."""

    reduce: Callable[[Tensor], Tensor]
    polar: Polar | None


@torch.no_grad()
def agd(params: list[Tensor], grads: list[Tensor], state: dict[str, Any], *, plan: Plan,
        preset: Any, multipliers: Any, host: bool, shards: Shards | None = None
        ) -> tuple[Tensor, Any]:
    """One AGD step on ``params`` (in place), from ``grads``; returns ``(η, ok)``.

    ``params``/``grads`` are the local tensors ``plan`` was built for (the parameters that have
    a gradient; ``plan.L`` counts the others too). ``state`` maps each slot of ``preset``
    (``"source"``, ``"estimate"``) to its piece's state, updated in place. ``multipliers`` is
    ``gain·lr``: a number, a 0-dim tensor, or one per parameter (``(n,)`` tensor). ``host``
    finishes with the host's numbers (eager CPU: a skipped step returns before touching
    anything) instead of device tensors (no host sync: a skipped step is masked, η = 0).
    ``shards`` reaches the other shards of sharded parameters (None for plain tensors). η is a
    0-dim tensor in the parameters' dtype, ``ok`` whether the step was taken (a bool on the
    host, else a 0-dim bool tensor).
    """
    source, estimate = preset.source, preset.estimate
    reduce = shards.reduce if shards is not None else None
    finite = source.finite(grads, reduce)
    if host and finite is not None:
        finite = bool(finite)
        if not finite:
            return params[0].new_zeros(()), False
    if not estimate.lagged:
        source.absorb(state["source"], grads, finite)
    d = source.current(state["source"], grads)
    used = [grads[i].ne(0).any(dim=1) for i in plan.rows] if preset.lazy_rows else None
    flat, row_norms, directions = partial_sums(
        plan, d.us, grads if estimate.lagged else None, host=host,
        ns_steps=preset.family.ns_steps, polar=shards.polar if shards is not None else None,
        used=used)
    co = step_size(plan, reduce(flat) if reduce is not None else flat, estimate,
                   state["estimate"], d, finite=finite, multipliers=multipliers, host=host)
    if not host or co.ok:
        move(plan, params, d.us, directions, row_norms, co, host)
        if preset.retraction is not None:
            retract(plan, params, preset.retraction, reduce, co.ok,
                    _step_taken(co, d.us, directions, row_norms, host)
                    if preset.retraction.needs_step else None)
    if estimate.lagged:
        source.absorb(state["source"], grads, finite)
    dtype, device = params[0].dtype, params[0].device
    if host:
        return torch.tensor(float(co.eta), dtype=dtype, device=device), bool(co.ok)
    return (co.eta if co.eta.dtype == dtype else co.eta.to(dtype)), co.ok


def _step_taken(co: Any, us: list[Tensor], directions: dict[int, Tensor],
                row_norms: list[Tensor], host: bool) -> Move:
    """The step just taken, as a retraction with ``needs_step`` reads it."""
    coefficients = np.concatenate([co.cells, co.ps]) if host else torch.cat([co.cells, co.ps])
    return Move([directions.get(i, u) for i, u in enumerate(us)], coefficients, row_norms,
                co.scale)
