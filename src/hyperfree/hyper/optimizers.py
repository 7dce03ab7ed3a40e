r"""Hypergradient optimisers: the levels of a tower (Chandra et al., NeurIPS 2022, §3).

Each optimiser holds its *tuned* hyperparameters as one raw (unconstrained) 1-D tensor, kept in
range by the paper's reparametrisations (``SPEC.md`` §2):

.. code-block:: text

    lr (SGD, SGDPerParam, AdaGrad, Adam, AdamLR)   raw = α            clamped at α ≥ 0
    lr (RMSProp, RMSPropLR)                        α = raw²           (never negative)
    momentum μ, RMSProp's alpha γ, betas β₁, β₂    x = (tanh(raw)+1)/2 ∈ (0, 1), |raw| ≤ 15

Hyperparameters are float64 (a handful of numbers); the updates run in the weights' dtype.

The optimiser given as ``optimizer=`` (the *hyperoptimiser*) treats that raw tensor as its
parameters, one "parameter tensor" per entry; ``None`` keeps the hyperparameters fixed. A stack
is written top-down, as in the paper: ``Adam(optimizer=SGD(lr=1e-5))`` is ``adam / sgd``.
Hyperparameters that a variant does not tune (eps; the betas of ``AdamLR``; γ of
``RMSPropLR``) are plain floats.

The update rules are the pure functions of :mod:`hyperfree.hyper._functional`; this file is the
bookkeeping (validation, reparametrisation, state). :class:`~hyperfree.hyper.HyperModule` drives
the levels; an optimiser object can serve in one tower only.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._functional import adagrad_update, adam_update, rmsprop_update, sgd_update

__all__ = ["HyperOptimizer", "SGD", "SGDPerParam", "AdaGrad", "RMSProp", "RMSPropLR", "Adam",
           "AdamLR", "OPTIMIZERS"]

State = dict[str, Tensor]


def _check_lr(name: str, lr: float) -> float:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"{name}: lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


def _check_unit(name: str, field: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"{name}: {field} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_eps(name: str, eps: float) -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{name}: eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def _to_unit_raw(x: float) -> float:
    """Inverse of ``(tanh(raw)+1)/2``."""
    return math.atanh(2.0 * x - 1.0)


#: Clamp bounds of the raw value per transform: α ≥ 0 (projection, as the paper leaves it
#: unconstrained); |raw| ≤ 15 keeps (tanh+1)/2 within 1e-13 of 0 and 1, never equal (β = 1
#: would divide Adam's bias correction by zero).
_BOUNDS = {"lr": (0.0, math.inf), "sq": (-math.inf, math.inf), "unit": (-15.0, 15.0)}


class HyperOptimizer:
    """Base class of one tower level; subclasses define the maths, this class the bookkeeping.

    Subclass contract: ``name`` (the text ``parse`` accepts), ``_tuned`` (natural name and
    transform of each raw entry: ``"lr"`` = identity clamped at 0, ``"sq"`` = square,
    ``"unit"`` = ``(tanh+1)/2``), ``_raw_init()``, ``_fixed()`` and ``_delta()``.
    """

    name: ClassVar[str] = ""
    _tuned: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, optimizer: HyperOptimizer | None) -> None:
        if optimizer is not None and not isinstance(optimizer, HyperOptimizer):
            raise ValueError(f"{type(self).__name__}: optimizer must be a hyperfree.hyper "
                             f"optimiser or None, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self._bound = False
        self.raw: Tensor = torch.empty(0)   # current raw hyperparameters (live inside a tower)
        self.lower: Tensor = torch.empty(0)  # clamp bounds per raw entry
        self.upper: Tensor = torch.empty(0)
        self.state: State = {}               # state of the tensor this level optimises
        self.step_count = 0
        self.last: dict[str, Any] | None = None  # inputs of the last update (to rebuild graph)

    # ---- configuration -------------------------------------------------------------------
    def _config(self) -> dict[str, float]:
        """Constructor arguments to print (natural form), ``lr`` first."""
        raise NotImplementedError

    def _defaults(self) -> dict[str, float]:
        raise NotImplementedError

    def own_repr(self) -> str:
        """This level alone as stack text, e.g. ``sgd(lr=0.001)`` (no hyperoptimiser)."""
        defaults = self._defaults()
        shown = [f"{k}={v!r}" for k, v in self._config().items()
                 if k == "lr" or v != defaults.get(k)]
        return f"{self.name}({', '.join(shown)})"

    def __repr__(self) -> str:
        own = self.own_repr()
        return own if self.optimizer is None else f"{own} / {self.optimizer!r}"

    def levels(self) -> list[HyperOptimizer]:
        """This optimiser and its hyperoptimisers, bottom-up."""
        out: list[HyperOptimizer] = [self]
        while out[-1].optimizer is not None:
            out.append(out[-1].optimizer)  # type: ignore[arg-type]
        return out

    # ---- binding and reparametrisation ---------------------------------------------------
    def _raw_init(self, n_tensors: int) -> list[float]:
        """Initial raw values (one per entry of ``_tuned``, or per tensor for SGDPerParam)."""
        raise NotImplementedError

    def _kinds(self, n_tensors: int) -> list[tuple[str, str]]:
        return list(self._tuned)

    def bind(self, n_tensors: int, like: Tensor) -> None:
        """Create the raw hyperparameters for optimising ``n_tensors`` tensors (dtype of like)."""
        if self._bound:
            raise ValueError(f"{self!r} is already used by a HyperModule; build a new optimiser "
                             "for each tower")
        self._bound = True
        kinds = self._kinds(n_tensors)
        # hyperparameters are a handful of numbers: keep them in float64 where the device can
        dtype = like.dtype if like.device.type == "mps" else torch.float64
        self.raw = torch.tensor(self._raw_init(n_tensors), dtype=dtype, device=like.device)
        bounds = [_BOUNDS[t] for _, t in kinds]
        self.lower = torch.tensor([lo for lo, _ in bounds], dtype=dtype, device=like.device)
        self.upper = torch.tensor([hi for _, hi in bounds], dtype=dtype, device=like.device)

    def natural(self, raw: Tensor | None = None) -> dict[str, Tensor]:
        """Constrained hyperparameters from ``raw`` (default: current), differentiably."""
        raw = self.raw if raw is None else raw
        out: dict[str, Tensor] = {}
        for (key, kind), x in zip(self._tuned, raw.unbind(0)):
            out[key] = x * x if kind == "sq" else (torch.tanh(x) + 1) / 2 if kind == "unit" else x
        return out

    def _fixed(self) -> dict[str, float]:
        """Hyperparameters that are not tuned (natural form), excluding eps."""
        return {}

    def values(self) -> dict[str, float]:
        """Current hyperparameters in natural form as Python floats (report/logging)."""
        with torch.no_grad():
            out = {k: float(v.mean()) for k, v in self.natural(self.raw.detach()).items()}
        return {**out, **self._fixed()}

    # ---- maths -----------------------------------------------------------------------------
    def _delta(self, hp: dict[str, Tensor], g: Tensor, state: State, step: int,
               sizes: list[int]) -> tuple[Tensor, State]:
        """The additive update of the flat tensor whose flat gradient is ``g``."""
        raise NotImplementedError

    def delta(self, g: Tensor, sizes: list[int], hp: dict[str, Tensor] | None = None,
              *, state: State | None = None, step: int | None = None
              ) -> tuple[Tensor, State]:
        """One update from the current (or given) state: ``(delta, new_state)``; pure."""
        hp = self.natural() if hp is None else hp
        state = self.state if state is None else state
        step = self.step_count + 1 if step is None else step
        return self._delta(hp, g, state, step, sizes)


class SGD(HyperOptimizer):
    """SGD with optional momentum (PyTorch convention ``b = μ·b + g``, ``p ← p − α·b``).

    ``momentum=0`` (default) means no momentum at all (nothing to tune); otherwise μ ∈ (0, 1)
    is tuned through ``(tanh+1)/2``.
    """

    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, *,
                 optimizer: HyperOptimizer | None = None) -> None:
        super().__init__(optimizer)
        self.lr = _check_lr("SGD", lr)
        self.momentum = 0.0 if momentum == 0 else _check_unit("SGD", "momentum", momentum)
        self._tuned = (("lr", "lr"), ("momentum", "unit")) if self.momentum else (("lr", "lr"),)

    def _config(self) -> dict[str, float]:
        return {"lr": self.lr, "momentum": self.momentum}

    def _defaults(self) -> dict[str, float]:
        return {"lr": 0.01, "momentum": 0.0}

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [self.lr] + ([_to_unit_raw(self.momentum)] if self.momentum else [])

    def _delta(self, hp: dict[str, Tensor], g: Tensor, state: State, step: int,
               sizes: list[int]) -> tuple[Tensor, State]:
        delta, buf = sgd_update(g, state.get("momentum_buffer"), hp["lr"], hp.get("momentum"))
        return delta, ({} if buf is None else {"momentum_buffer": buf})


class SGDPerParam(HyperOptimizer):
    """SGD with one step size per parameter tensor (each tuned separately, clamped at 0).

    ``values()['lr']`` reports the mean of the per-tensor step sizes.
    """

    name = "sgdperparam"

    def __init__(self, lr: float = 0.01, *, optimizer: HyperOptimizer | None = None) -> None:
        super().__init__(optimizer)
        self.lr = _check_lr("SGDPerParam", lr)

    def _config(self) -> dict[str, float]:
        return {"lr": self.lr}

    def _defaults(self) -> dict[str, float]:
        return {"lr": 0.01}

    def _kinds(self, n_tensors: int) -> list[tuple[str, str]]:
        return [("lr", "lr")] * n_tensors

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [self.lr] * n_tensors

    def natural(self, raw: Tensor | None = None) -> dict[str, Tensor]:
        return {"lr": self.raw if raw is None else raw}

    def _delta(self, hp: dict[str, Tensor], g: Tensor, state: State, step: int,
               sizes: list[int]) -> tuple[Tensor, State]:
        lr = hp["lr"].to(g.dtype)  # float64 step sizes, but g's precision for the update
        if len(sizes) != g.numel():  # expand one step size per tensor to its elements
            counts = torch.tensor(sizes, device=g.device)
            lr = torch.repeat_interleave(lr, counts, output_size=g.numel())
        return sgd_update(g, None, lr, None)[0], {}


class AdaGrad(HyperOptimizer):
    """AdaGrad (``s = s + g²``, ``p ← p − α·g/(√s + ε)``), tuning α (clamped at 0)."""

    name = "adagrad"
    _tuned = (("lr", "lr"),)

    def __init__(self, lr: float = 0.01, eps: float = 1e-10, *,
                 optimizer: HyperOptimizer | None = None) -> None:
        super().__init__(optimizer)
        self.lr = _check_lr("AdaGrad", lr)
        self.eps = _check_eps("AdaGrad", eps)

    def _config(self) -> dict[str, float]:
        return {"lr": self.lr, "eps": self.eps}

    def _defaults(self) -> dict[str, float]:
        return {"lr": 0.01, "eps": 1e-10}

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [self.lr]

    def _delta(self, hp: dict[str, Tensor], g: Tensor, state: State, step: int,
               sizes: list[int]) -> tuple[Tensor, State]:
        delta, s = adagrad_update(g, state.get("sum"), hp["lr"], self.eps)
        return delta, {"sum": s}


class RMSProp(HyperOptimizer):
    """RMSProp (``v = γ·v + (1−γ)·g²``, ``p ← p − α·g/(√v + ε)``), tuning α = raw² and γ."""

    name = "rmsprop"
    _tuned: ClassVar[tuple[tuple[str, str], ...]] = (("lr", "sq"), ("alpha", "unit"))

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, *,
                 optimizer: HyperOptimizer | None = None) -> None:
        super().__init__(optimizer)
        cls = type(self).__name__
        self.lr = _check_lr(cls, lr)
        self.alpha = _check_unit(cls, "alpha", alpha)
        self.eps = _check_eps(cls, eps)

    def _config(self) -> dict[str, float]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps}

    def _defaults(self) -> dict[str, float]:
        return {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [math.sqrt(self.lr), _to_unit_raw(self.alpha)]

    def _delta(self, hp: dict[str, Tensor], g: Tensor, state: State, step: int,
               sizes: list[int]) -> tuple[Tensor, State]:
        alpha = hp.get("alpha", self.alpha)
        delta, v = rmsprop_update(g, state.get("square_avg"), hp["lr"], alpha, self.eps)
        return delta, {"square_avg": v}


class RMSPropLR(RMSProp):
    """RMSProp tuning only its step size α = raw²; the smoothing γ (``alpha``) stays fixed."""

    name = "rmsproplr"
    _tuned = (("lr", "sq"),)

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [math.sqrt(self.lr)]

    def _fixed(self) -> dict[str, float]:
        return {"alpha": self.alpha}


class Adam(HyperOptimizer):
    """Adam with bias correction, tuning α (clamped at 0), β₁ and β₂ (``(tanh+1)/2``)."""

    name = "adam"
    _tuned: ClassVar[tuple[tuple[str, str], ...]] = (
        ("lr", "lr"), ("beta1", "unit"), ("beta2", "unit"))

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, optimizer: HyperOptimizer | None = None) -> None:
        super().__init__(optimizer)
        cls = type(self).__name__
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{cls}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.lr = _check_lr(cls, lr)
        self.betas = (_check_unit(cls, "betas[0]", betas[0]),
                      _check_unit(cls, "betas[1]", betas[1]))
        self.eps = _check_eps(cls, eps)

    def _config(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps}

    def _defaults(self) -> dict[str, Any]:
        return {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [self.lr, _to_unit_raw(self.betas[0]), _to_unit_raw(self.betas[1])]

    def _delta(self, hp: dict[str, Tensor], g: Tensor, state: State, step: int,
               sizes: list[int]) -> tuple[Tensor, State]:
        b1, b2 = hp.get("beta1", self.betas[0]), hp.get("beta2", self.betas[1])
        delta, m, v = adam_update(g, state.get("exp_avg"), state.get("exp_avg_sq"), step,
                                  hp["lr"], b1, b2, self.eps)
        return delta, {"exp_avg": m, "exp_avg_sq": v}


class AdamLR(Adam):
    """Adam tuning only its step size α (Baydin et al., ICLR 2018); the betas stay fixed."""

    name = "adamlr"
    _tuned = (("lr", "lr"),)

    def _raw_init(self, n_tensors: int) -> list[float]:
        return [self.lr]

    def _fixed(self) -> dict[str, float]:
        return {"beta1": self.betas[0], "beta2": self.betas[1]}


#: Every optimiser class, by the name ``parse`` accepts (the registry-wide tests run over it).
OPTIMIZERS: dict[str, type[HyperOptimizer]] = {
    cls.name: cls for cls in (SGD, SGDPerParam, AdaGrad, RMSProp, RMSPropLR, Adam, AdamLR)}
