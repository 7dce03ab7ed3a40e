r"""``HyperModule``: any ``nn.Module`` trained by a hypergradient optimiser tower.

Chandra et al., *Gradient Descent: The Ultimate Optimizer*, NeurIPS 2022, §2-3 (``SPEC.md`` §2).
Levels are numbered bottom-up: level 0 optimises the weights ``w``, level k+1 optimises the
raw hyperparameters ``h_k`` of level k, and the top level's hyperparameters are fixed.

.. code-block:: text

    step(L_t):  one backward pass gives g_t = ∂L_t/∂w_t and ∂L_t/∂h_k for every tuned level
                (w_t and h_k are "live": they still depend on the hyperparameters of the level
                above through the previous update; nothing else is)
                [mean over ranks; divide by the loss scale]          (_distributed, _gradients)
                for k = top-1 … 0:   h_k ← clamp(h_k.detach() + δ_{k+1}(h_{k+1}, ∂L_t/∂h_k))
                one host sync: L, g, ∂L/∂h and the new h finite?     (else skip, or raise)
                [g ← clip(g)]
                w_{t+1} = w_t.detach() + δ_0(h_0, g_t.detach())       (live in h_0)

For ``SGD(α) / SGD(κ)`` this is ``α_t = α_{t−1} + κ·⟨g_t, g_{t−1}⟩`` then ``w ← w − α_t·g_t``.
The weights stay the model's own ``nn.Parameter`` objects and are updated in place; the live
copy used by the forward pass (through ``torch.func.functional_call``) aliases their storage, so
the user's module is never re-parametrised. The graph kept between steps spans one update of
each level: memory is flat, no reference cycles, and ``create_graph=True`` is never needed
(hypergradients are first derivatives of the loss).

The live graph itself is built and rebuilt by ``_live``, the state dict's layout is
``_checkpoint``'s, and what a step that cannot be taken does (skip, warn once, raise
:class:`TowerDivergedError`) is ``_divergence``'s.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from . import _checkpoint
from ._distributed import all_reduce_mean, broadcast_, module_state, resolve_group
from ._divergence import (SKIP_MESSAGE, NonFiniteStepWarning, TowerDivergedError,
                          hyperparameter_message, raw_limits, stuck_message,
                          weights_message)
from ._gradients import (ScalerView, all_finite, clip_grad_norm_, finite_flags, owned,
                         unscale_)
from ._live import LiveTower
from .optimizers import HyperOptimizer

__all__ = ["HyperModule", "NonFiniteStepWarning", "TowerDivergedError"]


class HyperModule(nn.Module):
    """Wrap ``model`` so that ``optimizer`` (a tower, e.g. ``Adam(optimizer=SGD(1e-5))``)
    trains it and tunes its own hyperparameters online.

    ``forward`` is the model's (train/eval, BatchNorm buffers and tied parameters included).
    ``step(loss)`` does the backward pass and updates every level. Keyword arguments:

    * ``fused`` (True): level 0 uses a fused twin (``_fused``: in-place update, analytic
      hypergradient) when it is SGD without momentum, SGDPerParam, Adam or AdamLR with a tuned
      step size; ``False`` forces the plain-autograd reference path everywhere. A state dict
      loads across the two settings (its layout is converted).
    * ``clip_grad_norm`` (None): clip the weight gradients to this joint L2 norm before the
      update (PyTorch's formula). The update uses the clipped gradient; the hypergradient is
      the exact derivative of the next loss through that update (``docs/hyper.md``).
    * ``data_parallel`` (None = automatic): average gradients and hypergradients over the
      ranks of a process group, so that every rank keeps identical weights and
      hyperparameters (``_distributed``). Do not wrap a HyperModule in DDP.
    * ``max_consecutive_skips`` (20): after this many skipped steps in a row, raise
      :class:`TowerDivergedError` (None: never).

    A loss or gradient that is not finite skips the step and changes nothing
    (:class:`NonFiniteStepWarning`, shown once per call site; ``skipped_steps`` counts them).
    A non-finite hyperparameter or non-finite weights raise :class:`TowerDivergedError`.
    """

    def __init__(self, model: nn.Module, optimizer: HyperOptimizer, *, fused: bool = True,
                 clip_grad_norm: float | None = None, data_parallel: Any = None,
                 max_consecutive_skips: int | None = 20) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"HyperModule needs an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, HyperOptimizer):
            raise ValueError(f"HyperModule needs a hyperfree.hyper optimiser such as SGD(0.01), "
                             f"got {type(optimizer).__name__}; use hyper.parse('sgd(0.01)')")
        _check_options(clip_grad_norm, max_consecutive_skips)
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0  # steps skipped so far (non-finite values, loss-scale overflow)
        self.last_step_skipped = False
        self._skips_in_a_row = 0
        self._group = resolve_group(data_parallel)
        self.model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("HyperModule: the model has no trainable parameters")
        self._params = [p for _, p in named]
        self._slots = self._parameter_slots(model, self._params)
        # one all-reduce buffer: the weights' widest floating dtype, at least float32
        self._bucket_dtype = torch.float32
        for p in self._params:
            self._bucket_dtype = torch.promote_types(self._bucket_dtype, p.dtype)
        self._narrowest = min((p.dtype for p in self._params if p.is_floating_point()),
                              key=lambda d: torch.finfo(d).max, default=torch.float32)
        if self._group is not None:  # every rank starts from the first rank's weights
            broadcast_(module_state(model), self._group)
        self._scaler_view = ScalerView()
        self.optimizer = optimizer
        self._levels = optimizer.levels()
        like = self._params[0]
        self._levels[0].bind(len(self._params), like)
        for below, level in zip(self._levels, self._levels[1:]):
            level.bind(below.raw.numel(), like)
        self._limits = raw_limits(self._levels, self._narrowest)
        self._tower = LiveTower(self._levels, self._params, fused)
        self._tower.rebuild()

    @staticmethod
    def _parameter_slots(model: nn.Module, params: list[Tensor]) -> list[tuple[str, int]]:
        """Every (module, attribute) that holds a trainable parameter, once, with the index of
        that parameter: shared modules appear once, a parameter tied into several modules
        appears in each (``functional_call``'s own tying mis-restores shared modules)."""
        index = {id(p): i for i, p in enumerate(params)}
        slots = []
        for prefix, module in model.named_modules():  # each module object once
            for name, p in module.named_parameters(recurse=False):
                if id(p) in index:
                    slots.append((f"{prefix}.{name}" if prefix else name, index[id(p)]))
        return slots

    # ---- forward -------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._group is not None and torch.is_grad_enabled():
            buffers = list(self.model.buffers())
            if buffers:  # as DDP's broadcast_buffers=True: the first rank's statistics
                broadcast_(buffers, self._group)
        live = {name: self._tower.live[i] for name, i in self._slots}
        return functional_call(self.model, live, args, kwargs, tie_weights=False)

    def extra_repr(self) -> str:
        return f"optimizer={self.optimizer!r}"

    @property
    def fused(self) -> bool:
        """Whether level 0 may use its fused twin (``False``: the autograd reference path)."""
        return self._tower.fused

    # ---- the step ------------------------------------------------------------------------
    def step(self, loss: Tensor, *, scale: float | Tensor | None = None,
             scaler: torch.amp.GradScaler | None = None) -> dict[str, Tensor]:
        """Back-propagate ``loss`` and update the tower top-down, then the weights.

        Loss scaling: ``loss`` is what is back-propagated. Pass ``scale=S`` if it is the true
        loss multiplied by S, or ``scaler=`` a ``torch.amp.GradScaler`` if it is
        ``scaler.scale(true_loss)``; then call ``scaler.update()`` as usual. Gradients and
        hypergradients are divided by the scale before any level uses them; an overflow skips
        the step silently (the scaler then lowers its scale; ``last_step_skipped`` tells a
        manual ``scale`` user to do the same).

        Returns the hyperparameters now in use as detached 0-dim tensors, keyed ``lr``,
        ``momentum``, ``alpha``, ``beta1``, ``beta2`` for level 0 and ``lr@1`` … for level 1…
        """
        _check_step_args(loss, scale, scaler)
        n = len(self._params)
        inputs = self._tower.live + [lv.raw for lv in self._levels[:-1]]
        grads = torch.autograd.grad(loss.reshape(()), inputs, allow_unused=True)
        if all(g is None for g in grads[:n]):
            raise ValueError("the loss does not depend on the HyperModule's weights: compute it "
                             "with hyper_module(x), not with the wrapped model")
        value = loss.detach().reshape(1).clone()
        g: list[Tensor] = [torch.zeros_like(p) if gi is None else owned(gi)
                           for gi, p in zip(grads[:n], self._params)]
        hgrads = [None if h is None else owned(h) for h in grads[n:]]
        if self._group is not None:
            reduced = all_reduce_mean([value, *g, *hgrads], self._group, self._bucket_dtype)
            value, g, hgrads = reduced[0], reduced[1:n + 1], reduced[n + 1:]  # type: ignore
        applied: bool | None = None
        if scaler is not None:  # the scaler unscales, checks, and calls _apply if all finite
            view = self._scaler_view.load([value, *g, *hgrads],
                                          lambda: self._apply(value, g, hgrads))
            try:
                applied = scaler.step(view)  # type: ignore[arg-type]
            finally:
                view.clear()
        else:
            if scale is not None:
                unscale_([value, *g, *hgrads], scale)
            applied = self._apply(value, g, hgrads)
        self.last_step_skipped = applied is not True
        if self.last_step_skipped:
            self._skip(scaled=scale is not None or scaler is not None)
            if (scale is None and scaler is None) or not bool(torch.isfinite(value).all()):
                warnings.warn(NonFiniteStepWarning(SKIP_MESSAGE), stacklevel=2)
        else:
            self._skips_in_a_row = 0
        return self.hyperparameter_tensors()

    def _apply(self, value: Tensor, g: list[Tensor], hgrads: list[Tensor | None]) -> bool:
        """Hyper-updates top-down, one finiteness check, then the weight update (True); or a
        roll-back of the hyper-updates (False: skip); a non-finite hyperparameter raises."""
        levels = self._levels
        saved = [(lv.raw, lv.state, lv.step_count, lv.last) for lv in levels]
        for k in range(len(levels) - 1, 0, -1):
            self._tower.update_hyper(k, hgrads[k - 1])
        grads_ok, hyper_ok = finite_flags(value, g, hgrads, [lv.raw for lv in levels[:-1]],
                                          self._limits)
        if not (grads_ok and all(hyper_ok)):
            for lv, (raw, state, count, last) in zip(levels, saved):
                lv.raw, lv.state, lv.step_count, lv.last = raw, state, count, last
            if grads_ok:
                self._tower.rebuild()
                raise TowerDivergedError(hyperparameter_message(levels, hyper_ok))
            return False
        if self.clip_grad_norm is not None:
            clip_grad_norm_(g, self.clip_grad_norm)
        self._tower.update_weights(g)
        return True

    def _skip(self, *, scaled: bool) -> None:
        """Bookkeeping of a skipped step: count it, rebuild the live graph, and raise if the
        weights are not finite or too many steps in a row were skipped."""
        self.skipped_steps += 1
        self._skips_in_a_row += 1
        self._tower.rebuild()
        if not all_finite(self._params):
            raise TowerDivergedError(weights_message(self._levels))
        limit = self.max_consecutive_skips
        if limit is not None and self._skips_in_a_row >= limit:
            raise TowerDivergedError(stuck_message(self._levels, self._skips_in_a_row,
                                                   self.skipped_steps, scaled))

    # ---- reporting -----------------------------------------------------------------------
    def hyperparameters(self) -> list[dict[str, float]]:
        """Bottom-up, one dict per level of current hyperparameters (natural form, floats)."""
        return [level.values() for level in self._levels]

    def hyperparameter_tensors(self) -> dict[str, Tensor]:
        """Current hyperparameters as detached 0-dim tensors: ``lr``, ``momentum``, … (level
        0), ``lr@1``, … (level 1), … (no host synchronisation)."""
        out: dict[str, Tensor] = {}
        with torch.no_grad():
            for k, level in enumerate(self._levels):
                suffix = "" if k == 0 else f"@{k}"
                for key, value in level.natural(level.raw.detach()).items():
                    out[key + suffix] = value.mean()
                for key, fixed in level._fixed().items():
                    out[key + suffix] = torch.tensor(fixed)
        return out

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Model, tower and optimiser state (plain tensors/primitives: ``weights_only`` safe)."""
        return {"format": _checkpoint.FORMAT, "stack": repr(self.optimizer),
                "model": self.model.state_dict(),
                "levels": [_checkpoint.level_state(level) for level in self._levels],
                "skipped_steps": self.skipped_steps, "skips_in_a_row": self._skips_in_a_row}

    def load_state_dict(self, state: dict[str, Any], *args: Any, **kwargs: Any
                        ) -> Any:  # type: ignore[override]
        """Restore what :meth:`state_dict` saved (with either ``fused`` setting); the next step
        equals an uninterrupted run."""
        if not isinstance(state, dict) or state.get("format") != _checkpoint.FORMAT:
            raise ValueError(f"not a HyperModule state dict (format {_checkpoint.FORMAT}); "
                             "save it with HyperModule.state_dict()")
        if state["stack"] != repr(self.optimizer) or len(state["levels"]) != len(self._levels):
            raise ValueError(f"state dict is for the stack {state['stack']!r}, this HyperModule "
                             f"has {self.optimizer!r}; build the same stack before loading")
        self.model.load_state_dict(state["model"])
        shapes = [p.shape for p in self._params] if self._tower.fast_path() else None
        saved = [_checkpoint.to_layout(state["levels"][0], shapes), *state["levels"][1:]]
        for level, level_saved in zip(self._levels, saved):
            _checkpoint.restore_level(level, level_saved)
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._skips_in_a_row = int(state.get("skips_in_a_row", 0))
        self._tower.rebuild()
        return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_options(clip_grad_norm: Any, max_consecutive_skips: Any) -> None:
    if clip_grad_norm is not None and not (_is_number(clip_grad_norm)
                                           and 0 < clip_grad_norm < math.inf):
        raise ValueError(f"clip_grad_norm must be a finite number > 0 or None, got "
                         f"{clip_grad_norm!r}")
    if max_consecutive_skips is not None and not (
            isinstance(max_consecutive_skips, int) and not isinstance(max_consecutive_skips, bool)
            and max_consecutive_skips >= 1):
        raise ValueError(f"max_consecutive_skips must be an integer >= 1 or None, got "
                         f"{max_consecutive_skips!r}")


def _check_step_args(loss: Any, scale: Any, scaler: Any) -> None:
    if not (isinstance(loss, Tensor) and loss.numel() == 1 and loss.requires_grad):
        raise ValueError("HyperModule.step needs the scalar loss of a forward pass through "
                         "the HyperModule with gradients enabled (call hyper_module(x))")
    if scale is not None and scaler is not None:
        raise ValueError("HyperModule.step: pass scale= or scaler=, not both")
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise ValueError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    if isinstance(scale, Tensor):
        if scale.numel() != 1 or scale.requires_grad:
            raise ValueError(f"scale must be a number or a one-element tensor without "
                             f"gradient, got a tensor of shape {tuple(scale.shape)}")
    elif scale is not None and not (_is_number(scale) and 0 < scale < math.inf):
        raise ValueError(f"scale must be a finite number > 0 (the factor the loss was "
                         f"multiplied by), got {scale!r}")
