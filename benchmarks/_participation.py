"""A probe of ``docs/agd-stability.md`` §18: AGD's ``G`` and ``L`` replaced by their
participation-weighted forms, applied from outside the library as every group's ``lr``.

AGD's step gives every tensor the same relative step ``η/L`` (the paper's "gradient
conditioning": every tensor's term ``g_W = σ_W ⟨u_W, D(u_W)⟩`` of ``G`` alike). Where the terms
are unequal — an encoder whose terms fall to a tenth of its decoder's while the decoder learns
the task — the tensors with small terms still count fully in ``L`` and in ``G``'s mean. With
``m_W`` the masses:

    L' = (Σ_W g_W)² / Σ_W g_W²/m_W      (the participation ratio: L when every g_W/m_W is equal)
    G' = Σ_W g_W / L'                     (so G'·L' = G·L = Σ g)
    η' = log((1 + √(1 + 4G')) / 2),   every tensor's step × (η'/L') / (η/L)

(zero-mass tensors — biases, generic — count in ``Σ g`` but not in the ratio). ``capped``:
``L' = Σ_W m_W · min(1, (g_W/m_W) / ḡ)``, ḡ the mean term per unit mass: a tensor whose term
per unit mass is below the mean counts that fraction of its mass, none counts more than it.
Computed here from the momentum the step is about to use (β m + (1 − β) g, bias-corrected),
with exact duals (nuclear norms: the library's Newton–Schulz polar differs by its
approximation); a diagnostic for ``--participation`` in ``agd_variants.py`` and
``hf_forks.py``, not a rule (it loses on the race's GPT and fcn16, §18).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from _gains import matrices  # benchmarks/: on the path of every script that imports this
from _quarters import quarter_medians

__all__ = ["Participation"]


def _dual(u: Tensor, kind: Any) -> float:
    """``⟨u, D(u)⟩`` summed over the kind's cells under the spectral family (without σ)."""
    cells, name = matrices(u, kind), kind.name
    if cells is not None:
        return float(torch.linalg.matrix_norm(cells, "nuc").sum())
    if name == "embedding":
        return float(torch.linalg.vector_norm(u.float(), dim=1).sum())
    if name == "gain":
        return float(u.float().abs().sum())
    return float(torch.linalg.vector_norm(u.float()))  # bias (per block ≈ whole), generic


class Participation:
    """Call after ``backward()`` and before ``opt.step()``: sets every group's ``lr`` to the
    factor (module docstring) and records it (``factors``, ``ratios`` = L'/L)."""

    def __init__(self, opt: Any, mode: str = "ratio") -> None:
        if mode not in ("ratio", "capped"):
            raise ValueError(f"mode {mode!r} is not 'ratio' or 'capped'")
        self.opt, self.mode, self.factors, self.ratios = opt, mode, [], []
        self.items = []
        for info in opt._infos.values():
            p, k = info.param, info.kind
            shape = tuple(p.shape)
            self.items.append((p, k, k.rule.mass(shape, k), k.rule.sigma(shape, k) * k.fork_scale))
        self.L = sum(m for _, _, m, _ in self.items)  # AGD's L: every tensor's mass
        self.base = [g["lr"] for g in opt.param_groups]  # the factor multiplies each group's lr

    @torch.no_grad()
    def __call__(self) -> float:
        opt = self.opt
        beta = opt.preset.source.beta
        count = int(opt._pieces.fields["source"]["count"]) + 1
        terms, masses = [], []
        for p, k, mass, sigma in self.items:
            if p.grad is None:
                continue
            buf = opt.state.get(p, {}).get("momentum_buffer")
            u = p.grad if buf is None else beta * buf + (1 - beta) * p.grad
            u = u / (1 - beta ** count) if buf is not None else u
            terms.append(sigma * _dual(u, k))
            masses.append(mass)
        L, total = self.L, sum(terms)
        sq = sum(t * t / m for t, m in zip(terms, masses) if m > 0)
        active = sum(t for t, m in zip(terms, masses) if m > 0)
        if not (total > 0 and sq > 0 and math.isfinite(total)):
            factor, ratio = 1.0, 1.0
        else:
            if self.mode == "ratio":
                L2 = active * active / sq
            else:  # a tensor below the mean term per unit mass counts that fraction of it
                mean = active / sum(m for m in masses if m > 0)
                L2 = sum(m * min(1.0, t / m / mean) for t, m in zip(terms, masses) if m > 0)
            eta = math.log((1 + math.sqrt(1 + 4 * total / L)) / 2)
            eta2 = math.log((1 + math.sqrt(1 + 4 * total / L2)) / 2)
            factor, ratio = (eta2 / L2) / (eta / L), L2 / L
        for g, lr in zip(opt.param_groups, self.base):
            g["lr"] = lr * factor
        self.factors.append(factor)
        self.ratios.append(ratio)
        return factor

    def attach(self) -> "Participation":
        """Call this before every ``opt.step()`` (wraps it); returns self."""
        plain = self.opt.step

        def step(closure: Any = None) -> Any:
            self()
            return plain(closure)
        self.opt.step = step
        return self

    def quarters(self) -> list[float]:
        """L'/L, then the step's factor: each the median over each quarter of the steps."""
        return quarter_medians(self.ratios, self.factors)
