"""Which parameters a network is scale-invariant in, measured from its gradients (the probes
of ``docs/agd-stability.md`` §12–§13, used by ``benchmarks/agd_variants.py``):
:func:`invariant_parameters` (every output row of a tensor: BatchNorm follows it) and
:func:`invariant_sets` (sets of tensors jointly: a residual stream's writers)."""
from __future__ import annotations

import copy
from typing import Callable

import torch

__all__ = ["invariant_parameters", "invariant_sets"]


def invariant_parameters(model: torch.nn.Module, example: torch.Tensor, tol: float = 1e-3
                         ) -> list[torch.nn.Parameter]:
    """The matrices and conv kernels whose every output row is measured scale-invariant: after
    one backward of ``model(example)``, ``|⟨g_r, W_r⟩| ≤ tol ‖g_r‖ ‖W_r‖`` for every row ``r``
    (a row followed by BatchNorm in training mode meets it up to rounding and BatchNorm's eps,
    ``f(cW_r) = f(W_r)``: 1e-5 to 2e-4 on the race's and VGG's convs; other rows 0.03–0.4)."""
    was = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    model(example).float().square().mean().backward()
    found = []
    for p in model.parameters():
        if p.grad is None or p.ndim < 2:
            continue
        g, w = p.grad.flatten(1).double(), p.detach().flatten(1).double()
        cos = (g * w).sum(1).abs() / (g.norm(dim=1) * w.norm(dim=1)).clamp_min(1e-300)
        if bool((cos <= tol).all()):
            found.append(p)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return found


@torch.no_grad()
def _radial(model: torch.nn.Module, params: list[torch.nn.Parameter], example: torch.Tensor,
            seed: int) -> list[float]:
    with torch.enable_grad():
        out = model(example)
        out = out if isinstance(out, torch.Tensor) else out[0]
        gen = torch.Generator().manual_seed(seed)
        (out.float() * torch.randn(out.shape, generator=gen)).sum().backward()
    r = [float((p.grad.double() * p.double()).sum()) if p.grad is not None else 0.0
         for p in params]
    model.zero_grad(set_to_none=True)
    return r


def invariant_sets(model: torch.nn.Module, example: Callable[[int], torch.Tensor],
                   tol: float = 1e-4) -> list[list[int]]:
    """The sets of parameters (indices into ``model.parameters()``) the network's output is
    measured jointly scale-invariant in: ``f(c W_S) = f(W_S)`` gives ``Σ_{t∈S} ⟨∇_t, W_t⟩ = 0``
    for every input and every loss. The radial derivatives ``r_t = ⟨∇_t, W_t⟩`` of T + 8
    random losses of random inputs (``example(k)``) form a matrix M whose null space the
    invariant sets' indicators span; parameters the null space's projector joins are one set
    (a tensor followed by BatchNorm alone; a residual stream's writers together). Zero tensors
    (their r is 0 by being 0) are left out. The reading runs on a copy: the model's weights,
    statistics and gradients stay as they were."""
    probe = copy.deepcopy(model).train()  # the model itself is not touched (a forward of it
    params = list(probe.parameters())      # may be waiting for its backward)
    live = [i for i, p in enumerate(params) if float(p.detach().norm()) > 0]
    rows = [_radial(probe, params, example(k), k) for k in range(len(live) + 8)]
    m = torch.tensor([[r[i] for i in live] for r in rows], dtype=torch.float64)
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-300)
    _, sv, vh = torch.linalg.svd(m, full_matrices=True)
    rank = int((sv > tol * sv[0]).sum())
    null = vh[rank:].T  # (T, T - rank)
    proj = null @ null.T
    seen, sets = set(), []
    for a in range(len(live)):
        if a in seen or proj[a, a] < 0.5 / len(live):
            continue
        members = [b for b in range(len(live)) if proj[a, b].abs() > 0.25 * proj[a, a]]
        indicator = torch.zeros(len(live), dtype=torch.float64)
        indicator[members] = 1.0
        if float((m @ indicator).norm()) <= 10 * tol * len(members) ** 0.5 * len(rows) ** 0.5:
            sets.append([live[b] for b in members])
        seen.update(members)
    return sets
