"""A hypergradient on AGD's step (a probe of ``docs/agd-stability.md`` §19, not a rule): the
loss's response to the last step, measured from the next gradient, scales every group's
``lr``.

The last step moved the weights by ``u`` (the iterate's actual change, whatever the preset's
pieces did). At the next batch the loss's derivative along ``u``, per unit of step scale, is
``⟨g, u⟩`` (Baydin et al. 2018, "Online learning rate adaptation with hypergradient
descent"; the tower paper's first level): negative while a longer step would have lowered the
loss further, positive once the step overshoots. Normalised to a cosine ``h = ⟨g, u⟩ /
(‖g‖ ‖u‖)`` it updates a log-scale multiplicatively,

    log s ← log s − κ h,        every group's lr = its own lr × s,

so ``s`` grows while successive steps agree and falls when they oppose, and noise (``h``
around 0) leaves it where it is; ``κ`` is the probe's one constant.

``reference="average"`` replaces the last step by the iterate's offset from the preset's
averaged weights, ``u = θ − θ̄`` (the drift over the average's window, ≈ the last 1/(γ+1) of
the run, with no copy kept): ``⟨g, θ − θ̄⟩ < 0`` while the loss still falls along the
drift, the hypergradient of a longer window than one step's (the one-step, greedy one is
short-horizon biased: Wu et al. 2018).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from _quarters import quarter_medians  # benchmarks/: on the path of the scripts that import this

__all__ = ["HyperGain"]


class HyperGain:
    """Wraps ``opt.step``: before each step reads ``h`` from the gradients and the last step,
    updates ``s`` and sets every group's ``lr``; records ``scales`` and ``cosines``."""

    def __init__(self, opt: Any, kappa: float, reference: str = "last") -> None:
        if not (kappa > 0 and math.isfinite(kappa)):
            raise ValueError(f"kappa {kappa!r} is not a positive number")
        if reference not in ("last", "average"):
            raise ValueError(f"reference {reference!r} is not 'last' or 'average'")
        self.opt, self.kappa, self.reference = opt, kappa, reference
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.last: list[torch.Tensor | None] = [None] * len(self.params)
        self.log_s, self.scales, self.cosines = 0.0, [], []
        self.base = [g["lr"] for g in opt.param_groups]  # s multiplies each group's own lr

    @torch.no_grad()
    def cosine(self) -> float | None:
        dots, gg, uu = 0.0, 0.0, 0.0
        for p, u in zip(self.params, self.last):
            if u is None or p.grad is None:
                continue
            g = p.grad.float()
            d, a, b = float((g * u).sum()), float(g.square().sum()), float(u.square().sum())
            dots, gg, uu = dots + d, gg + a, uu + b
        return dots / math.sqrt(gg * uu) if gg > 0 and uu > 0 else None

    def attach(self) -> "HyperGain":
        plain = self.opt.step

        def step(closure: Any = None) -> Any:
            if self.reference == "average":
                self.last = [self._offset(p) for p in self.params]
            h = self.cosine()
            if h is not None and math.isfinite(h):
                self.log_s -= self.kappa * h
                self.cosines.append(h)
            for g, lr in zip(self.opt.param_groups, self.base):
                g["lr"] = lr * math.exp(self.log_s)
            self.scales.append(math.exp(self.log_s))
            if self.reference == "average":
                return plain(closure)
            before = [p.detach().clone() for p in self.params]
            out = plain(closure)
            with torch.no_grad():
                self.last = [(p.detach() - b).float() for p, b in zip(self.params, before)]
            return out
        self.opt.step = step
        return self

    @torch.no_grad()
    def _offset(self, p: torch.Tensor) -> torch.Tensor | None:
        avg = self.opt.state.get(p, {}).get("average")
        return None if avg is None else (p.detach() - avg).float()

    def quarters(self) -> list[float]:
        """The scale s, then the cosine h: each the median over each quarter of the steps."""
        return quarter_medians(self.scales, self.cosines, digits=4)
