"""What the training loop drives: the :class:`Stepper` protocol, :class:`TorchStepper` and
:class:`MuonStepper`.

A stepper owns the whole of one optimisation step (zero the gradients, back-propagate, update),
so plain ``torch.optim`` optimisers, AGD, hypergradient towers (which need to own the backward
pass) and third-party peers look the same to the loop. Steppers are built by name through the
optimiser registry (:mod:`hyperfree.train.optimizers`). :func:`optimizers_of` and
:func:`describe_stepper` are what a schedule and ``config.json`` read from any stepper.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from hyperfree.optim import classify
from hyperfree.optim.rules import is_plain_matrix

__all__ = ["Stepper", "TorchStepper", "MuonStepper", "optimizers_of", "describe_stepper"]


@runtime_checkable
class Stepper(Protocol):
    """What the training loop drives.

    ``module`` is what the loop calls for the forward pass (the model itself, or a wrapper such
    as a hypergradient ``HyperModule``). ``step(loss)`` does backward + update and returns the
    scalars to log for this step as 0-dim tensors (e.g. ``{"eta": η}`` for AGD) without forcing
    a host-device synchronisation. ``init_weights()`` applies the optimiser's own
    initialisation (AGD's orthogonal one) or does nothing (PyTorch's default initialisation).
    ``train()`` / ``eval()`` are called by the loop when it switches between training and
    evaluation (optimisers such as Schedule-Free evaluate at a different point than they train);
    a stepper whose ``eval()`` does so says it with ``averaged = True`` (optional attribute), and
    the loop recomputes BatchNorm statistics at the evaluated weights.
    """

    module: nn.Module

    def init_weights(self) -> None: ...

    def step(self, loss: Tensor) -> dict[str, Tensor]: ...

    def train(self) -> None: ...

    def eval(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TorchStepper:
    """A stepper around any ``torch.optim.Optimizer``; it logs nothing (subclasses may).

    ``init`` is the optimiser's own initialisation, run by :meth:`init_weights`; ``clip`` > 0
    clips the gradients to that global norm before every step (``clip_grad_norm_``).
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                 *, init: Callable[[], None] | None = None, clip: float = 0.0):
        self.module = module
        self.optimizer = optimizer
        self._init = init
        self.clip = float(clip or 0.0)

    def init_weights(self) -> None:
        if self._init is not None:
            self._init()

    @property
    def averaged(self) -> bool:
        """Whether ``eval()`` puts other weights than the trained ones in the model (AGD's
        averaged weights): the loop then recomputes BatchNorm statistics there."""
        return bool(getattr(self.optimizer, "averaging", False))

    def train(self) -> None:
        hook = getattr(self.optimizer, "train", None)
        if callable(hook):
            hook()

    def eval(self) -> None:
        hook = getattr(self.optimizer, "eval", None)
        if callable(hook):
            hook()

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.clip,
                foreach=True)
        self.optimizer.step()
        return {}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class MuonStepper:
    """``torch.optim.Muon`` on the 2-D hidden weight matrices, ``torch.optim.AdamW`` on the rest.

    Muon is "an optimizer for 2D parameters of neural network hidden layers; other parameters,
    such as bias, and embedding, should be optimized by a standard method such as AdamW"
    (``help(torch.optim.Muon)``). Which parameters are matrices is read from their AGD kind
    (:func:`hyperfree.optim.classify`), not guessed from shapes: kind ``linear`` with one block
    and 2 dims goes to Muon; embeddings, gains, biases, conv kernels, packed (Q/K/V, gates) and
    ``(in, out)``-stored matrices go to AdamW. Both share ``lr`` (torch's default is 1e-3 for
    each), so one schedule drives both; Muon takes ``momentum`` and ``weight_decay`` (its
    defaults 0.95 and 0.1), AdamW runs at its own defaults otherwise (weight decay 0.01).
    """

    def __init__(self, module: nn.Module, *, lr: float, momentum: float,
                 weight_decay: float, clip: float = 0.0) -> None:
        self.module = module
        self.clip = float(clip or 0.0)
        infos = classify(module)
        muon = [i for i in infos if is_plain_matrix(i.kind)]
        chosen = {id(i.param) for i in muon}
        rest = [i for i in infos if id(i.param) not in chosen]
        self.names = {"muon": [i.name for i in muon], "adamw": [i.name for i in rest]}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if muon:
            self.optimizers["muon"] = torch.optim.Muon(
                [i.param for i in muon], lr=lr, momentum=momentum, weight_decay=weight_decay)
        if rest:
            self.optimizers["adamw"] = torch.optim.AdamW([i.param for i in rest], lr=lr,
                                                         foreach=True)

    def init_weights(self) -> None:
        """PyTorch's default initialisation: nothing to do."""

    def train(self) -> None:
        pass

    def eval(self) -> None:
        pass

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(list(self.module.parameters()), self.clip,
                                           foreach=True)
        for opt in self.optimizers.values():
            opt.step()
        return {}

    def describe(self) -> dict[str, Any]:
        """Each part's parameters and every hyperparameter it runs with."""
        return {part: {"params": self.names[part], **_plain(opt.defaults)}
                for part, opt in self.optimizers.items()}

    def state_dict(self) -> dict[str, Any]:
        return {part: opt.state_dict() for part, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"this Muon state has parts {sorted(state)} but the model gives "
                             f"{sorted(self.optimizers)}; load it into the same model")
        for part, opt in self.optimizers.items():
            opt.load_state_dict(state[part])


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able hyperparameters of an optimiser's ``defaults``: tuples as lists, a
    non-finite number as its text (``"inf"``), tensors and objects left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            value = list(value)
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        if value is None or isinstance(value, (bool, int, float, str)) or (
                isinstance(value, list) and all(math.isfinite(v) for v in value)):
            out[key] = value
    return out


def optimizers_of(stepper: Any) -> list[torch.optim.Optimizer]:
    """The ``torch.optim`` optimisers a stepper drives (``optimizers`` or ``optimizer``)."""
    many = getattr(stepper, "optimizers", None)
    if isinstance(many, dict):
        return list(many.values())
    if many is not None:
        return list(many)
    one = getattr(stepper, "optimizer", None)
    return [one] if isinstance(one, torch.optim.Optimizer) else []


def describe_stepper(stepper: Any) -> dict[str, Any]:
    """What ``config.json`` records about a stepper beyond its flags: its ``describe()`` if it
    has one, else the hyperparameters of a single torch optimiser."""
    describe = getattr(stepper, "describe", None)
    if callable(describe):
        return dict(describe())
    opts = optimizers_of(stepper)
    return _plain(opts[0].defaults) if len(opts) == 1 else {}
