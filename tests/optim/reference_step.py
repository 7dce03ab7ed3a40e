r"""The obviously correct twin of AGD's fast step: every cell of every kind, one at a time.

A test oracle (it lives with the tests; :class:`tests.optim.reference.ReferenceAGD` makes it an
optimiser). It shares no code with the fast path (:mod:`hyperfree.optim._kernels`) or with
:mod:`hyperfree.optim.rules`: the cells are cut out by explicit slicing, the scales and masses
are written out again, the Newton–Schulz iteration is a plain loop over single matrices, and the
update is an out-of-place ``copy_``. ``tests/optim`` proves the two equal in float64 for every
kind and preset. The algorithm (``docs/agd-rules.md``; Bernstein et al. 2023, Algorithm 1):

.. code-block:: text

    u   = g, or with momentum β:  m ← β m + (1 − β) g,  u = m / (1 − β^t)
    for every cell c of every parameter (its scale σ_c, its unit direction D_c(u_c)):
        term_c = σ_c · ⟨u_c, D_c⟩
    G = (1/L) Σ_c term_c,   L = Σ_params mass
    fading (optional): H ← β H + (1 − β) G, n ← n + 1, Ḡ = H / (1 − β^n);
                       P ← Ḡ and M ← Ḡ if Ḡ ≥ P, else M ← min(M, Ḡ);  G ← G · (M / Ḡ)^power
    η = log((1 + sqrt(1 + 4G)) / 2)
    if a gradient is not finite: change nothing (momentum included) and return
    (the momentum counter t counts the finite gradients the buffer took)
    if G is not finite: change no weight and return
    every cell:  W_c ← W_c − gain · lr · (η/L) · σ_c · D_c
    retract (optional): every matrix block / conv slice / embedding row whose norm exceeds
                        (sphere: differs from) its init norm ρ_c is rescaled to ρ_c;
                        rotation: rescaled to the norm √(‖W'_c‖² − d (1 − d/‖W'_c‖²)₊),
                        d = ‖W'_c − W_c‖²
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import torch
from torch import Tensor

from hyperfree.optim import Kind

__all__ = ["reference_step"]

_A, _B, _C = 3.4445, -4.7750, 2.0315


def _ns(m: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
    """Newton–Schulz polar factor of ONE matrix, written out; a matrix with one row or one
    column has rank one, and its polar factor is exactly ``m / ‖m‖_F`` (no iteration)."""
    if min(m.shape) == 1:
        n = torch.sqrt((m.double() ** 2).sum())
        return (m.double() / n).to(m.dtype) if n > 0 else torch.zeros_like(m)
    x = m.to(dtype)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    n = torch.sqrt((x * x).sum())
    x = x / n if n > 0 else x
    for _ in range(steps):
        a = x @ x.T
        x = _A * x + (_B * a + _C * (a @ a)) @ x
    return (x.T if transposed else x).to(m.dtype)


def _matrix_cells(p: Tensor, kind: Kind) -> tuple[list[Tensor], float, int]:
    """Each matrix cell as a (d_out, d_in) view of ``p``; its σ; its mass. A matrix with
    ``groups`` (attention heads of a per-head packed projection) has groups x blocks cells of
    rows, and mass ``blocks``; a tensor that shares its layer with ``share`` others carries
    ``1/share`` of the mass."""
    name, B, g, share = kind.name, kind.blocks, kind.groups, kind.share
    if name == "linear":
        h = p.shape[0] // (B * g)
        return [p[c * h:(c + 1) * h] for c in range(B * g)], math.sqrt(h / p.shape[1]), \
            B / share
    if name == "linear_in_out":
        h = p.shape[1] // (B * g)
        return ([p[:, c * h:(c + 1) * h].T for c in range(B * g)], math.sqrt(h / p.shape[0]),
                B / share)
    kernel = p.shape[2:]
    positions = list(itertools.product(*[range(k) for k in kernel]))
    out = []
    if name == "conv":  # (c_out, c_in/g, *k)
        co, ci = p.shape[0] // g, p.shape[1]
        for grp in range(g):
            out += [p[grp * co:(grp + 1) * co, :][(slice(None), slice(None), *pos)]
                    for pos in positions]
    else:  # conv_transpose: (c_in, c_out/g, *k)
        ci, co = p.shape[0] // g, p.shape[1]
        for grp in range(g):
            out += [p[grp * ci:(grp + 1) * ci, :][(slice(None), slice(None), *pos)].T
                    for pos in positions]
    return out, math.sqrt(co / ci) / math.sqrt(len(positions)), 1 / share


def _cells(p: Tensor, kind: Kind, family: str) -> tuple[list[Tensor], float, int, str]:
    """(cells, σ, mass, direction) of one parameter, with cells as views of ``p``; σ of a
    tensor on one side of ``forks`` forked sums is √2 larger per fork (in G and the step)."""
    cells, sigma, mass, how = _own_cells(p, kind, family)
    return cells, sigma * math.sqrt(2.0) ** kind.forks, mass, how


def _own_cells(p: Tensor, kind: Kind, family: str) -> tuple[list[Tensor], float, int, str]:
    name, B = kind.name, kind.blocks
    if name in ("linear", "linear_in_out", "conv", "conv_transpose"):
        cells, sigma, mass = _matrix_cells(p, kind)
        return cells, sigma, mass, ("polar" if family == "spectral" else "l2")
    if name == "embedding":
        d = p.shape[1]
        cells = [p[t] for t in range(p.shape[0])] if family == "spectral" else [p]
        return cells, math.sqrt(d), 1 / kind.share, "l2"
    if name == "generic":  # the whole tensor, any shape (a scalar too): RMS norm, mass 0
        return [p], math.sqrt(p.numel()), 0, "l2"
    # gain, bias: B equal blocks along dim 0, sliced (views of p for any memory layout; a
    # reshape(-1) would copy a non-contiguous p and the update would be lost)
    rows = p.shape[0] // B
    cells = [p[b * rows:(b + 1) * rows] for b in range(B)]
    h = p.numel() // B
    if name == "gain":
        return cells, 1.0, B / kind.share, ("sign" if family == "spectral" else "l2")
    return cells, math.sqrt(h), 0, "l2"


def _direction(u: Tensor, how: str, ns_steps: int, ns_dtype: torch.dtype) -> Tensor:
    if how == "sign":
        return torch.sign(u)
    if how == "polar":
        return _ns(u, ns_steps, ns_dtype)
    n = torch.sqrt((u.double() ** 2).sum())  # float64: ‖u‖² of a float16 u can overflow
    return (u.double() / n).to(u.dtype) if n > 0 else torch.zeros_like(u)


def _retract_cells(p: Tensor, kind: Kind) -> list[tuple[Tensor, float]]:
    if kind.name in ("linear", "linear_in_out", "conv", "conv_transpose"):
        cells, sigma, _ = _matrix_cells(p, kind)
        return [(c, sigma * math.sqrt(min(c.shape))) for c in cells]
    if kind.name == "embedding":
        return [(p[t], math.sqrt(p.shape[1])) for t in range(p.shape[0])]
    return []


@torch.no_grad()
def reference_step(params: list[Tensor], grads: list[Tensor | None], kinds: list[Kind], *,
                   family: str, gains: list[float], lrs: list[float], momentum: float = 0.0,
                   buffers: list[Tensor | None] | None = None, step: int = 1,
                   retract: str | None = None, ns_steps: int = 5,
                   ns_dtype: torch.dtype | None = None, fresh_ema: list[float] | None = None,
                   fresh_beta: float | None = None, forks: bool = False,
                   streams: bool = False, fading: list[float] | None = None,
                   fading_beta: float | None = None, fading_power: float = 1.0,
                   lazy_rows: bool = False) -> Tensor:
    """One AGD step on ``params`` in place; returns η (0 if skipped). ``buffers[i]`` is the
    momentum of parameter ``i`` (created and updated here); parameters with no gradient count
    in ``L`` but are not moved. ``fresh_ema`` (a one-element list, updated) selects the fresh
    estimate of G: ``step`` is then the number of finite gradients BEFORE this one, and
    ``fresh_beta`` (default: ``momentum``) the β of its average. ``forks``: the kinds' forks
    scale σ (else they are ignored). ``streams``: a tensor's step (not G) is √terms long (√2
    per fork where no terms were read) over what its σ gives: written here as a gain.
    ``fading`` (``[H, n, P, M]``, updated) holds G where its average has risen since its peak
    (``fading_beta`` the average's β), or damps it (``fading_power`` 2: by the rise squared).
    ``lazy_rows``: under the spectral family an embedding row whose gradient row is all zero
    has a zero source row (no term, no move; the momentum keeps it)."""
    if streams:
        gains = [g * (math.sqrt(k.terms) if k.terms else math.sqrt(2.0) ** k.forks)
                 / (math.sqrt(2.0) ** k.forks if forks else 1.0) for g, k in zip(gains, kinds)]
    if not forks:
        kinds = [dataclasses.replace(k, forks=0) for k in kinds]
    L = sum(_cells(p, k, family)[2] for p, k in zip(params, kinds))
    buffers = buffers if buffers is not None else [None] * len(params)
    finite = all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
    unused = [_unused_rows(g, k, family) if lazy_rows and g is not None else None
              for g, k in zip(grads, kinds)]
    if fresh_ema is not None:
        return _fresh_step(params, grads, kinds, family, gains, lrs, momentum, buffers, step,
                           retract, ns_steps, ns_dtype, fresh_ema, L, finite,
                           momentum if fresh_beta is None else fresh_beta, unused)
    us: list[Tensor | None] = []
    new_buffers = list(buffers)
    for i, g in enumerate(grads):
        if g is None:
            us.append(None)
            continue
        if momentum:  # the buffer takes finite gradients only; step = their count
            m = torch.zeros_like(g) if buffers[i] is None else buffers[i]
            if finite:
                m = momentum * m + (1 - momentum) * g
                new_buffers[i] = m
            us.append(m / (1 - momentum ** step))
        else:
            us.append(g)
    if momentum and finite:
        for i in range(len(params)):
            if new_buffers[i] is not None:
                if buffers[i] is None:
                    buffers[i] = new_buffers[i]
                else:
                    buffers[i].copy_(new_buffers[i])
    if not finite:
        return torch.zeros((), dtype=params[0].dtype)
    plan = []
    total = torch.zeros((), dtype=torch.float64)
    us = [u if u is None or r is None else _zero_rows(u, r) for u, r in zip(us, unused)]
    for p, u, k in zip(params, us, kinds):
        if u is None:
            continue
        dtype = ns_dtype or (torch.float64 if p.dtype == torch.float64 else torch.bfloat16)
        cells, sigma, _, how = _cells(p, k, family)
        ucells, _, _, _ = _cells(u, k, family)
        for c, uc in zip(cells, ucells):
            d = _direction(uc, how, ns_steps, dtype)
            total = total + sigma * (uc.double() * d.double()).sum()
            plan.append(d)
    G = total / L
    if not torch.isfinite(G):
        return torch.zeros((), dtype=params[0].dtype)
    if fading is not None:
        G = G * _fading(float(G), fading, fading_beta) ** fading_power
    eta = torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)
    j = 0
    for i, (p, u, k) in enumerate(zip(params, us, kinds)):
        if u is None:
            continue
        cells, sigma, _, how = _cells(p, k, family)
        before = p.clone()
        for c in cells:
            d = plan[j]
            j += 1
            c.copy_(c - (gains[i] * lrs[i] * eta / L * sigma).to(c.dtype) * d)
        if retract is not None:
            _retract(p, before, k, retract)
    return eta.to(params[0].dtype)


def _unused_rows(g: Tensor, kind: Kind, family: str) -> list[int] | None:
    """The rows of a spectral embedding whose gradient row is all zero, one by one."""
    if kind.name != "embedding" or family != "spectral":
        return None
    return [r for r in range(g.shape[0]) if not any(float(v) != 0.0 for v in g[r])]


def _zero_rows(u: Tensor, rows: list[int]) -> Tensor:
    u = u.clone()
    for r in rows:
        u[r] = 0
    return u


def _fading(G: float, state: list[float], beta: float) -> float:
    """The factor ``M/Ḡ`` of a step whose self-estimate is ``G`` (``state`` updated)."""
    H, n, peak, least = state
    H, n = beta * H + (1 - beta) * G, n + 1
    avg = H / (1 - beta ** n)
    if avg >= peak:
        peak = least = avg
    else:
        least = min(least, avg)
    state[:] = [H, n, peak, least]
    return least / avg if avg > least else 1.0


def _retract(p: Tensor, before: Tensor, kind: Kind, retract: str) -> None:
    """Every retraction cell of ``p`` (moved from ``before``): sphere / ball to its init norm
    ρ; rotation: ``‖W'‖² − d·max(0, 1 − d/‖W'‖²)``, ``d = ‖W' − W‖²``, as the squared norm."""
    for (c, rho), (c0, _) in zip(_retract_cells(p, kind), _retract_cells(before, kind)):
        n2 = (c.double() ** 2).sum()
        if retract == "rotation":  # take out ‖Δ‖² · max(0, 1 − ‖Δ‖²/‖W'‖²)
            d2 = ((c.double() - c0.double()) ** 2).sum()
            taken = d2 * max(0.0, 1.0 - float(d2 / n2)) if n2 > 0 else 0.0
            c.copy_(c * torch.sqrt((n2 - taken) / n2).to(c.dtype) if n2 > 0 else c)
            continue
        n = torch.sqrt(n2)
        if n > 0 and (retract == "sphere" or n > rho):
            c.copy_(c * (rho / n).to(c.dtype))


def _move(params: list[Tensor], kinds: list[Kind], family: str, live: list[bool],
          directions: list[Tensor], eta: Tensor, L: int, gains: list[float], lrs: list[float],
          retract: str | None) -> None:
    """``W_c ← W_c − gain·lr·(η/L)·σ_c·D_c`` for every cell, then the optional retraction."""
    j = 0
    for i, (p, k) in enumerate(zip(params, kinds)):
        if not live[i]:
            continue
        cells, sigma, _, _ = _cells(p, k, family)
        before = p.clone()
        for c in cells:
            c.copy_(c - (gains[i] * lrs[i] * eta / L * sigma).to(c.dtype) * directions[j])
            j += 1
        if retract is not None:
            _retract(p, before, k, retract)


def _fresh_step(params: list[Tensor], grads: list[Tensor | None], kinds: list[Kind],
                family: str, gains: list[float], lrs: list[float], beta: float,
                buffers: list[Tensor | None], k: int, retract: str | None, ns_steps: int,
                ns_dtype: torch.dtype | None, ema: list[float], L: int, finite: bool,
                beta_h: float, unused: list[list[int] | None]) -> Tensor:
    """The fresh estimate, written out: D from m_{t−1}; F = Σ σ⟨g, D⟩/L; H ← β_h H + (1−β_h)F;
    G = max(0, H/(1−β_h^k)); the step; then m ← βm + (1−β)g. Nothing moves if a gradient is not
    finite; with k = 0 (no direction yet) only the momentum takes the gradient."""
    if not finite:
        return torch.zeros((), dtype=params[0].dtype)
    live = [g is not None for g in grads]
    directions, F = [], 0.0
    for p, g, m, kind, on, rows in zip(params, grads, buffers, kinds, live, unused):
        if not on:
            continue
        dtype = ns_dtype or (torch.float64 if p.dtype == torch.float64 else torch.bfloat16)
        cells, sigma, _, how = _cells(p, kind, family)
        source = m if m is not None else torch.zeros_like(g)
        source = source if rows is None else _zero_rows(source, rows)
        for uc, gc in zip(_cells(source, kind, family)[0], _cells(g, kind, family)[0]):
            d = _direction(uc, how, ns_steps, dtype)
            F += sigma * float((gc.double() * d.double()).sum())
            directions.append(d)
    F /= L
    if k > 0:
        ema[0] = beta_h * ema[0] + (1 - beta_h) * F
    G = max(0.0, ema[0] / (1 - beta_h ** k)) if k > 0 else 0.0
    eta = torch.tensor(math.log((1 + math.sqrt(1 + 4 * G)) / 2), dtype=torch.float64)
    _move(params, kinds, family, live, directions, eta, L, gains, lrs, retract)
    for i, g in enumerate(grads):
        if g is not None:
            m = torch.zeros_like(g) if buffers[i] is None else buffers[i]
            new = beta * m + (1 - beta) * g
            if buffers[i] is None:
                buffers[i] = new
            else:
                buffers[i].copy_(new)
    return eta.to(params[0].dtype)
