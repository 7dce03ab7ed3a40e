"""The live graph of a tower: how each level's update is applied so that the next loss
back-propagates into the hyperparameters, and how that graph is rebuilt.

Level k+1 updates level k's raw hyperparameters ``h_k ← clamp(h_k.detach() + δ_{k+1}(…))``, a
tensor that stays *live* in ``h_{k+1}``; level 0 updates the weights in place and hands the
forward pass live aliases of them (:class:`_Attach`, or the fused twins of ``_fused``). Each
level keeps the inputs of its last update (``level.last``), so :meth:`LiveTower.rebuild`
re-creates exactly the same graph after a skipped step or a ``load_state_dict``. Only one
update per level is ever live: the graph and memory stay flat.
"""
from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from . import _checkpoint
from ._fused import FusedAdam, FusedSGD
from .optimizers import SGD, Adam, HyperOptimizer, SGDPerParam

__all__ = ["LiveTower"]

State = dict[str, Any]  # tensors (reference path: flat) or lists of tensors (fused path)


class _Attach(torch.autograd.Function):
    """``target (+= delta if apply)``, returned as a tensor whose gradient flows to ``delta``.

    ``target`` is a detached alias of the weights, so the result *is* the weights' storage: the
    forward pass uses the model's own memory while autograd sees ``w = w.detach() + delta``.
    """

    @staticmethod
    def forward(ctx: Any, delta: Tensor, target: Tensor, apply: bool) -> Tensor:
        if apply:
            target.add_(delta)
        ctx.mark_dirty(target)
        return target

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


class LiveTower:
    """The levels of a tower (bottom-up), the weights they train and the live weights.

    ``fused``: level 0 may use its fused twin (see :meth:`fast_path`); ``live``: the tensors the
    forward pass uses in place of the weights (the weights themselves before the first update).
    """

    def __init__(self, levels: list[HyperOptimizer], params: list[Tensor], fused: bool) -> None:
        self.levels, self.params, self.fused = levels, params, fused
        self.sizes = [p.numel() for p in params]
        self.live: list[Tensor] = list(params)

    def update_hyper(self, k: int, grad: Tensor | None) -> None:
        """Level k updates the raw hyperparameters of level k-1 (live in level k's own)."""
        level, below = self.levels[k], self.levels[k - 1]
        old = below.raw.detach()
        if grad is None:  # level k-1 has not influenced a loss yet (first step)
            below.raw, level.last = old.requires_grad_(True), None
            return
        grad = grad.detach()
        delta, state = level.delta(grad, [1] * old.numel())
        level.last = {"grad": grad, "state": level.state, "step": level.step_count + 1,
                      "old": old}
        level.state, level.step_count = _checkpoint.detached(state), level.step_count + 1
        below.raw = self._clamp(old + delta, below)

    @staticmethod
    def _clamp(raw: Tensor, level: HyperOptimizer) -> Tensor:
        raw = torch.clamp(raw, min=level.lower, max=level.upper)
        return raw if raw.requires_grad else raw.requires_grad_(True)

    def fast_path(self) -> str | None:
        """"sgd" / "adam" when level 0 has a fused twin and a tuned (live) step size."""
        level = self.levels[0]
        if not (self.fused and len(self.levels) > 1):
            return None
        if type(level) in (SGD, SGDPerParam) and not getattr(level, "momentum", 0.0):
            return "sgd"
        return "adam" if isinstance(level, Adam) else None

    def _fused_update(self, grads: list[Tensor], state: State, step: int, apply: bool
                      ) -> tuple[list[Tensor], State]:
        """Level 0's update through its fused twin; returns (live weights, new state)."""
        level, n = self.levels[0], len(grads)
        targets = [p.detach() for p in self.params]
        hp = level.natural()
        if self.fast_path() == "sgd":
            return list(FusedSGD.apply(hp["lr"], n, apply, *targets, *grads)), {}
        level = cast(Adam, level)
        m_old = state.get("exp_avg") or [torch.zeros_like(g) for g in grads]
        v_old = state.get("exp_avg_sq") or [torch.zeros_like(g) for g in grads]
        out = FusedAdam.apply(hp["lr"], hp.get("beta1", level.betas[0]),
                              hp.get("beta2", level.betas[1]), step, level.eps, n, apply,
                              *targets, *grads, *m_old, *v_old)
        return list(out[:n]), {"exp_avg": list(out[n:2 * n]), "exp_avg_sq": list(out[2 * n:])}

    def update_weights(self, grads: list[Tensor]) -> None:
        level = self.levels[0]
        if self.fast_path():
            step = level.step_count + 1
            self.live, state = self._fused_update(grads, level.state, step, apply=True)
            level.last = {"grad": grads, "state": level.state, "step": step}
            level.state, level.step_count = state, step
            return
        g = torch.cat([gi.reshape(-1) for gi in grads])
        delta, state = level.delta(g, self.sizes)
        level.last = {"grad": g, "state": level.state, "step": level.step_count + 1}
        level.state, level.step_count = _checkpoint.detached(state), level.step_count + 1
        self.live = self._attach(delta, apply=True)

    def _attach(self, delta: Tensor, *, apply: bool) -> list[Tensor]:
        """Weights (updated in place if ``apply``) as live tensors depending on ``delta``."""
        deltas = [d.view_as(p) for d, p in zip(delta.split(self.sizes), self.params)]
        if not delta.requires_grad:  # fixed hyperparameters: a plain optimiser step
            if apply:
                with torch.no_grad():
                    torch._foreach_add_(self.params, deltas)
            return list(self.params)
        return [_Attach.apply(d, p.detach(), apply) for d, p in zip(deltas, self.params)]

    def rebuild(self) -> None:
        """Re-create the live graph of the last update from the saved inputs (exact values).

        Used after ``load_state_dict`` and after a skipped step, so that the next loss still
        back-propagates into every hyperparameter exactly as in an uninterrupted run.
        """
        for k in range(len(self.levels) - 1, 0, -1):
            level, below = self.levels[k], self.levels[k - 1]
            stored = below.raw.detach().clone()
            if level.last is None:
                below.raw = stored.requires_grad_(True)
                continue
            last = level.last
            delta, _ = level.delta(last["grad"], [1] * stored.numel(), state=last["state"],
                                   step=last["step"])
            live = torch.clamp(last["old"] + delta, min=below.lower, max=below.upper)
            below.raw = (_Attach.apply(live, stored, False) if live.requires_grad
                         else stored.requires_grad_(True))
        level = self.levels[0]
        if level.last is None:
            self.live = list(self.params)
            return
        last = level.last
        grads = last["grad"] if isinstance(last["grad"], list) else None
        if grads is not None and self.fast_path():
            self.live = self._fused_update(grads, last["state"], last["step"], apply=False)[0]
            return
        g = torch.cat([x.reshape(-1) for x in grads]) if grads is not None else last["grad"]
        delta, _ = level.delta(g, self.sizes, state=last["state"], step=last["step"])
        self.live = self._attach(delta, apply=False)
