r"""What happens to the gradients between the backward pass and the tower's update.

``HyperModule.step`` makes one ``torch.autograd.grad`` call, which returns the weight gradients
``g`` and the hypergradients ``∂L/∂h_k`` of every tuned level. Before any level uses them:

.. code-block:: text

    (data parallel)  all ranks: [L, g, ∂L/∂h] ← mean over ranks   (one all_reduce, _distributed)
    (loss scaling)   [L, g, ∂L/∂h] ← [L, g, ∂L/∂h] / S            (the loss was S·L)
    check            L, Σg, ∂L/∂h finite; new hyperparameters in range   (one host sync)
    (clipping)       g ← g · min(1, c / (‖g‖₂ + 1e-6))             (weights' gradients only)

Why the hypergradients are divided by S once, not S²: the update that made w_t live was built
from the *unscaled* g_{t−1} (stored detached), so ``∂(S·L_t)/∂α = −⟨S·g_t, g_{t−1}⟩ =
S·∂L_t/∂α``. Every hypergradient is linear in the incoming ``∂L_t/∂w_t``, so one division by
the current S makes all of them exact whatever S was at earlier steps. Had g_{t−1} been stored
scaled, the step itself (and hence ``∂L/∂α``) would carry S_{t−1}·S_t.

Clipping uses PyTorch's formula (``torch.nn.utils.clip_grad_norm_``) on the unscaled,
all-reduced weight gradients; what the hypergradient sees is defined in ``docs/hyper.md``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["owned", "unscale_", "clip_grad_norm_", "finite_flags", "all_finite", "ScalerView"]


def owned(t: Tensor) -> Tensor:
    """``t``, or a copy of it if its entries share memory (autograd may return an expanded
    gradient, e.g. of ``w.sum()``, that several gradients alias); the step then scales and
    clips gradients in place safely."""
    return t.clone() if t.numel() > 1 and 0 in t.stride() else t


def unscale_(tensors: Sequence[Tensor | None], scale: float | Tensor) -> None:
    """Multiply every tensor by ``1/scale`` in place (the reciprocal taken in float64, as
    ``GradScaler`` does, so a power-of-two scale unscales exactly)."""
    present = [t for t in tensors if t is not None]
    if not present:
        return
    if isinstance(scale, Tensor):
        inv = scale.detach().double().reciprocal().reshape(())
        by_dtype: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for t in present:
            by_dtype.setdefault((t.dtype, t.device), []).append(t)
        for (dtype, device), group in by_dtype.items():
            torch._foreach_mul_(group, inv.to(device=device, dtype=dtype))
    else:
        torch._foreach_mul_(present, 1.0 / float(scale))


def clip_grad_norm_(grads: Sequence[Tensor], max_norm: float) -> Tensor:
    """Scale ``grads`` in place so that their joint L2 norm is at most ``max_norm``.

    ``torch.nn.utils.clip_grad_norm_``'s formula: ``coef = min(1, max_norm / (norm + 1e-6))``.
    Norms of 16-bit gradients are accumulated in float32. Returns the norm before clipping.
    """
    norms = [torch.linalg.vector_norm(g, 2.0, dtype=_acc_dtype(g)) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for dtype, group in by_dtype.items():
        torch._foreach_mul_(group, coef.to(dtype))
    return total


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def finite_flags(loss: Tensor, grads: Sequence[Tensor], hgrads: Sequence[Tensor | None],
                 raws: Sequence[Tensor], limits: Sequence[Tensor]) -> tuple[bool, list[bool]]:
    """``(loss, gradients and hypergradients all finite, [|raw| <= limit for every entry of
    every raw, …])`` in one host synchronisation. A gradient is judged by its sum (nan/inf
    propagate; accumulated in at least float32, so an overflowing sum, entries ~1e34, counts as
    non-finite); a NaN raw fails its comparison."""
    small = torch.cat([loss.detach().reshape(-1).double()]
                      + [g.sum(dtype=_acc_dtype(g)).reshape(1).double() for g in grads]
                      + [h.reshape(-1).double() for h in hgrads if h is not None])
    flags = torch.cat([torch.isfinite(small).all().reshape(1)]
                      + [raw.detach().abs() <= limit for raw, limit in zip(raws, limits)])
    out = flags.tolist()
    return bool(out[0]), [bool(f) for f in out[1:]]


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one sum per tensor, one host sync)."""
    sums = torch.stack([t.detach().sum(dtype=_acc_dtype(t)).double() for t in tensors])
    return bool(torch.isfinite(sums).all())


class ScalerView:
    """The optimiser that ``torch.amp.GradScaler.step`` drives on behalf of a HyperModule.

    ``GradScaler`` unscales and inf-checks ``p.grad`` for every ``p`` in ``param_groups`` and
    calls ``step()`` only if all are finite. Here each "parameter" is a zero-storage holder
    (a broadcast scalar) whose ``.grad`` *is* one of the step's gradients, so the scaler
    unscales the very tensors the tower then uses, keeps its own found-inf bookkeeping, and
    ``scaler.update()`` works as with any optimiser. Only public ``GradScaler`` API is used.
    """

    def __init__(self) -> None:
        self.param_groups: list[dict[str, Any]] = [{"params": []}]
        self._step: Callable[[], Any] | None = None

    def load(self, grads: Sequence[Tensor | None], step: Callable[[], Any]) -> ScalerView:
        holders = []
        for g in grads:
            if g is None:
                continue
            holder = torch.empty((), dtype=g.dtype, device=g.device).expand_as(g)
            holder.grad = g
            holders.append(holder)
        self.param_groups[0]["params"] = holders
        self._step = step
        return self

    def step(self) -> Any:
        assert self._step is not None, "ScalerView.step before load"
        return self._step()

    def clear(self) -> None:
        """Drop the references to this step's gradients."""
        self.param_groups[0]["params"] = []
        self._step = None
