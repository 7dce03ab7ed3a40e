r"""The differentiable update rules of the hypergradient optimisers (pure functions).

Chandra, Xie, Ragan-Kelley, Meijer, *Gradient Descent: The Ultimate Optimizer*, NeurIPS 2022
(arXiv:1909.13371), §2-3; ``SPEC.md`` §2. Every function maps *detached* inputs — the gradient
``g`` of the tensor being optimised (flattened) and the optimiser state — and *live*
hyperparameters (0-dim tensors, or a vector for per-tensor step sizes) to the additive update
``delta`` and the new state. Autograd then carries ``∂delta/∂hyperparameter``, which is the
paper's whole trick: with ``p_{t+1} = p_t.detach() + delta(α, g_t.detach())`` the next loss
back-propagates into α and yields the hypergradient, e.g. ``∂L_{t+1}/∂α = −⟨g_{t+1}, g_t⟩``
for SGD, with no hand derivation and no ``create_graph=True`` (only first derivatives of the
loss w.r.t. the weights are needed; see ``docs/hyper.md``).

.. code-block:: text

    sgd:       b = μ·b + g   (b = g at the first step; no b when μ = 0)   delta = −α·b
    adagrad:   s = s + g²                                                 delta = −α·g/(√s + ε)
    rmsprop:   v = γ·v + (1−γ)·g²                                         delta = −α·g/(√v + ε)
    adam:      m = β₁·m + (1−β₁)·g,  v = β₂·v + (1−β₂)·g²
               delta = −α·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)

Symbols: α = ``lr``, μ = ``momentum``, γ = ``alpha`` (RMSProp smoothing, PyTorch's name),
β₁, β₂ = ``betas``; t = 1, 2, … is the step number. State tensors are never modified in place:
a new state is returned, so the old one can be kept (for resuming the live graph exactly).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["sgd_update", "adagrad_update", "rmsprop_update", "adam_update", "safe_sqrt"]


class _SafeSqrt(torch.autograd.Function):
    """``√x`` whose derivative at ``x = 0`` is taken as 0 instead of ``inf``.

    An entry whose gradient has always been exactly zero (a dead ReLU unit, an unused
    embedding row) has ``v = 0``; its update ``g/(√v + ε)`` is 0 whatever the hyperparameters,
    so its true contribution to the hypergradient is 0, but plain autograd computes
    ``inf · 0 = nan`` there.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        r = x.sqrt()
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # where r = 0 the incoming gradient is 0 too (g ≡ 0 there), so 0 / tiny = 0
        (r,) = ctx.saved_tensors
        return grad / (2 * r).clamp_min_(torch.finfo(r.dtype).tiny)


def safe_sqrt(x: Tensor) -> Tensor:
    """``x.sqrt()`` with derivative 0 (not ``inf``) where ``x == 0``."""
    return _SafeSqrt.apply(x) if x.requires_grad else x.sqrt()


def sgd_update(g: Tensor, buf: Tensor | None, lr: Tensor, momentum: Tensor | None
               ) -> tuple[Tensor, Tensor | None]:
    """SGD (optionally with heavy-ball momentum μ, PyTorch's convention): ``(delta, new_buf)``.

    ``lr`` is a 0-dim tensor or a tensor broadcastable to ``g`` (one step size per element).
    """
    if momentum is None:
        return -lr * g, None
    b = g if buf is None else momentum * buf + g
    return -lr * b, b


def adagrad_update(g: Tensor, sum_sq: Tensor | None, lr: Tensor, eps: float
                   ) -> tuple[Tensor, Tensor]:
    """AdaGrad: ``s = s + g²``, ``delta = −α·g/(√s + ε)``; returns ``(delta, s)``."""
    s = g * g if sum_sq is None else sum_sq + g * g
    return -lr * (g / (safe_sqrt(s) + eps)), s


def rmsprop_update(g: Tensor, square_avg: Tensor | None, lr: Tensor, alpha: Tensor | float,
                   eps: float) -> tuple[Tensor, Tensor]:
    """RMSProp: ``v = γ·v + (1−γ)·g²``, ``delta = −α·g/(√v + ε)``; returns ``(delta, v)``."""
    g2 = g * g
    v = (1 - alpha) * g2 if square_avg is None else torch.lerp(square_avg, g2, 1 - alpha)
    return -lr * (g / (safe_sqrt(v) + eps)), v


def adam_update(g: Tensor, exp_avg: Tensor | None, exp_avg_sq: Tensor | None, step: int,
                lr: Tensor, beta1: Tensor | float, beta2: Tensor | float, eps: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Adam with bias correction at step ``t = step`` (≥ 1): returns ``(delta, m, v)``.

    ``m = lerp(m, g, 1−β₁)`` is the same as ``β₁·m + (1−β₁)·g``; a missing state means zeros.
    """
    if step < 1:
        raise ValueError(f"adam_update needs step >= 1, got {step}; count steps from 1")
    g2 = g * g
    m = (1 - beta1) * g if exp_avg is None else torch.lerp(exp_avg, g, 1 - beta1)
    v = (1 - beta2) * g2 if exp_avg_sq is None else torch.lerp(exp_avg_sq, g2, 1 - beta2)
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    denom = safe_sqrt(v) * (1 / bc2 ** 0.5) + eps  # √(v/bc2) + ε, with one full-size pass less
    return (m / denom) * (-lr / bc1), m, v
