r"""Fused level-0 updates with analytic hypergradients (fast twins of the autograd path).

The autograd reference path (``_functional`` + plain autograd) builds ~15 full-size operations
per update and ~25 in backward. For the weight level, where tensors are large, these autograd
functions do the update in place in a few passes and return the vector-Jacobian product with
respect to the (0-dim) hyperparameters directly. ``u_i = ∂L/∂w_i`` is the incoming gradient.

.. code-block:: text

    SGD:   w_i −= α·g_i                        ∂L/∂α = −Σ⟨u_i, g_i⟩
    Adam:  m = lerp(m₀, g, 1−β₁), v = lerp(v₀, g², 1−β₂), r = √v, c = (1−β₂ᵗ)^(−1/2),
           den = c·r + ε, d = m/den, w_i −= (α/b₁)·d with b₁ = 1−β₁ᵗ
           A = Σ⟨u, m/den⟩, B = Σ⟨u/den, m₀ − g⟩, C = Σ⟨u·m/den², (v₀ − g²)/(2r)⟩ (0 where r=0),
           D = Σ⟨u·m/den², r⟩
           ∂L/∂α  = −A/b₁
           ∂L/∂β₁ = −α·(B/b₁ + t·β₁^(t−1)·A/b₁²)
           ∂L/∂β₂ = (α/b₁)·(c·C + ½·t·β₂^(t−1)·(1−β₂ᵗ)^(−3/2)·D)

Tests check both against the reference path in float64 (``tests/hyper/test_faithful.py``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["FusedSGD", "FusedAdam", "dot"]


class FusedSGD(torch.autograd.Function):
    """Fast path of ``w_i ← w_i − α_i·g_i`` for SGD without momentum (one step size, or one per
    tensor): one in-place pass per tensor forward; backward ``∂L/∂α_i = −⟨u_i, g_i⟩`` with
    ``u_i = ∂L/∂w_i``. Equal to the autograd reference path (tested in float64)."""

    @staticmethod
    def forward(ctx: Any, lr: Tensor, n: int, apply: bool, *tensors: Tensor) -> tuple[Tensor, ...]:
        targets, grads = tensors[:n], tensors[n:]
        if apply:
            steps = [-lr.item()] * n if lr.dim() == 0 else (-lr).tolist()
            for t, g, a in zip(targets, grads, steps):
                t.add_(g, alpha=a)
        ctx.mark_dirty(*targets)
        ctx.save_for_backward(*grads)
        ctx.scalar, ctx.lr_dtype = lr.dim() == 0, lr.dtype
        return tuple(targets)

    @staticmethod
    def backward(ctx: Any, *us: Tensor | None) -> tuple[Tensor | None, ...]:
        grads = ctx.saved_tensors
        dots = torch.stack([torch.zeros((), dtype=g.dtype, device=g.device) if u is None
                            else dot(u, g) for u, g in zip(us, grads)]).to(ctx.lr_dtype)
        grad_lr = -(dots.sum() if ctx.scalar else dots)
        return (grad_lr, None, None) + (None,) * (2 * len(grads))


class FusedAdam(torch.autograd.Function):
    """Adam on n weight tensors, in place, with the analytic hypergradient (module docstring).

    Inputs: ``lr, beta1, beta2`` (0-dim tensors or floats), ``step`` t ≥ 1, ``eps``, ``n``,
    ``apply`` (False: rebuild the graph of an update already applied), then the n detached
    weights, n gradients, n old ``m`` and n old ``v``. Outputs: the n weights (live), then the
    n new ``m`` and n new ``v`` (not differentiable).
    """

    @staticmethod
    def forward(ctx: Any, lr: Any, beta1: Any, beta2: Any, step: int, eps: float, n: int,
                apply: bool, *tensors: Tensor) -> tuple[Tensor, ...]:
        targets, grads = tensors[:n], tensors[n:2 * n]
        m_old, v_old = tensors[2 * n:3 * n], tensors[3 * n:]
        a, b1, b2 = float(lr), float(beta1), float(beta2)
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        c = bc2 ** -0.5
        ms, vs, saved = [], [], []
        for t, g, m0, v0 in zip(targets, grads, m_old, v_old):
            g2 = g * g
            m = torch.lerp(m0, g, 1 - b1)
            v = torch.lerp(v0, g2, 1 - b2)
            r = v.sqrt()
            den = r.mul(c).add_(eps)
            if apply:
                t.add_(m / den, alpha=-a / bc1)
            ms.append(m)
            vs.append(v)
            saved += [g, m0, v0, m, r, den, g2]
        ctx.mark_dirty(*targets)
        ctx.mark_non_differentiable(*ms, *vs)
        ctx.save_for_backward(*saved)
        ctx.consts = (a, b1, b2, step, bc1, bc2, c, n)
        return (*targets, *ms, *vs)

    @staticmethod
    def backward(ctx: Any, *outs: Tensor | None) -> tuple[Tensor | None, ...]:
        a, b1, b2, t, bc1, bc2, c, n = ctx.consts
        need_b1, need_b2 = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        saved = ctx.saved_tensors
        dots: list[list[Tensor]] = [[], [], [], []]  # A, B, C, D terms per tensor
        for i, u in enumerate(outs[:n]):
            if u is None:
                continue
            g, m0, v0, m, r, den, g2 = saved[7 * i:7 * i + 7]
            ud = u / den
            dots[0].append(dot(ud, m))
            if need_b1:
                dots[1].append(dot(ud, m0) - dot(ud, g))
            if need_b2:
                w = ud.mul_(m).div_(den)  # u·m/den², reusing ud's memory
                q = (v0 - g2).div_(r.mul(2).clamp_min_(torch.finfo(r.dtype).tiny))
                dots[2].append(dot(w, q))
                dots[3].append(dot(w, r))
        A, B, C, D = (torch.stack(d).sum().double() if d else 0.0 for d in dots)
        def out(value: Any, index: int) -> Tensor | None:
            if not ctx.needs_input_grad[index]:
                return None
            return torch.as_tensor(value).to(torch.float64).reshape(())

        grad_lr = out(-A / bc1, 0)
        grad_b1 = out(-a * (B / bc1 + t * b1 ** (t - 1) * A / bc1 ** 2), 1) if need_b1 else None
        grad_b2 = (out((a / bc1) * (c * C + 0.5 * t * b2 ** (t - 1) * bc2 ** -1.5 * D), 2)
                   if need_b2 else None)
        return (grad_lr, grad_b1, grad_b2) + (None,) * (4 + 4 * n)


def dot(u: Tensor, g: Tensor) -> Tensor:
    """``⟨u, g⟩`` in one pass without copies for the layouts autograd produces."""
    if u.is_contiguous() and g.is_contiguous():
        return torch.dot(u.view(-1), g.view(-1))
    if u.dim() == 2 and u.mT.is_contiguous() and g.mT.is_contiguous():
        return torch.dot(u.mT.reshape(-1), g.mT.reshape(-1))
    return (u * g).sum()


