"""How the batch's loss answers AGD's step (a probe of ``docs/agd-stability.md`` §19, not a
rule): after each step the same batch is evaluated again at the new weights, and the change
is read against the first-order term.

With ``g`` the batch's gradient, ``u`` the step the optimiser took (the weights' change) and
``L0``, ``L1`` the batch's loss before and after it,

    ρ = (L1 − L0) / ⟨g, u⟩            (the realised fraction of the linear decrease),
    s* = −⟨g, u⟩ / (2 (L1 − L0 − ⟨g, u⟩))   (the scale of u a parabola through them minimises).

On a quadratic ρ = 1 − 1/(2 s*): ρ = ½ where the step is the batch's line minimum (s* = 1),
→ 1 where the step is far short of it, < 0 past twice it. AGD's step minimises a majorant of
the loss, so where the majorant is tight s* ≈ 1 and where it is loose s* > 1. Evaluating on
the same batch leaves the noise out (a fresh batch's answer is the greedy hypergradient of
``_hypergain.py``); buffers (BatchNorm's running statistics) are restored after the extra
forward. Alongside, ``coherence``: the cosine of successive batches' gradients, per tensor
and averaged over tensors (near 1 where the gradient's signal dominates its noise, near 0
where noise does, < 0 where the steps oscillate).
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Sequence

import torch

from _quarters import quarter_medians  # benchmarks/: on the path of the scripts that import this

__all__ = ["LineFit"]


class LineFit:
    """``before()`` just before ``opt.step()``; ``after(loss0, reloss)`` just after it, with
    ``reloss()`` the batch's loss at the current weights (no grad). Records ``rho``, ``scale``."""

    def __init__(self, params: Sequence[torch.Tensor], module: torch.nn.Module) -> None:
        self.params, self.module = list(params), module
        self.rho: list[float] = []
        self.scale: list[float] = []
        self.coherence: list[float] = []
        self._before: list[torch.Tensor] = []
        self._grads: list[torch.Tensor | None] = []

    @torch.no_grad()
    def before(self) -> None:
        self._before = [p.detach().clone() for p in self.params]
        grads = [None if p.grad is None else p.grad.detach().float().clone()
                 for p in self.params]
        cos = []
        for g, h in zip(grads, self._grads):
            if g is not None and h is not None:
                norms = float(g.norm() * h.norm())
                if norms > 0:
                    cos.append(float((g * h).sum()) / norms)
        if cos:
            self.coherence.append(statistics.fmean(cos))
        self._grads = grads

    @torch.no_grad()
    def after(self, loss0: float, reloss: Callable[[], Any]) -> None:
        gu = sum(float((p.grad.float() * (p.detach() - b).float()).sum())
                 for p, b in zip(self.params, self._before) if p.grad is not None)
        buffers = [b.detach().clone() for b in self.module.buffers()]
        loss1 = float(reloss())
        for b, kept in zip(self.module.buffers(), buffers):
            b.copy_(kept)
        if gu < 0 and math.isfinite(loss1):
            self.rho.append((loss1 - loss0) / gu)
            curv = 2 * (loss1 - loss0 - gu)
            self.scale.append(-gu / curv if curv > 0 else math.inf)

    def quarters(self) -> list[float]:
        """ρ, then s*, then the coherence: each the median over each quarter of the steps."""
        return quarter_medians(self.rho, self.scale, self.coherence)
