"""What the training loop drives: the :class:`Stepper` protocol and :class:`TorchStepper`.

A stepper owns the whole of one optimisation step (zero the gradients, back-propagate, update),
so plain ``torch.optim`` optimisers, AGD, hypergradient towers (which need to own the backward
pass) and third-party peers look the same to the loop. Steppers are built by name through the
optimiser registry (:mod:`hyperfree.train.optimizers`).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["Stepper", "TorchStepper"]


@runtime_checkable
class Stepper(Protocol):
    """What the training loop drives.

    ``module`` is what the loop calls for the forward pass (the model itself, or a wrapper such
    as a hypergradient ``HyperModule``). ``step(loss)`` does backward + update and returns the
    scalars to log for this step as 0-dim tensors (e.g. ``{"eta": η}`` for AGD) without forcing
    a host-device synchronisation. ``init_weights()`` applies the optimiser's own
    initialisation (AGD's orthogonal one) or does nothing (PyTorch's default initialisation).
    ``train()`` / ``eval()`` are called by the loop when it switches between training and
    evaluation (optimisers such as Schedule-Free evaluate at a different point than they train).
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

    ``init`` is the optimiser's own initialisation, run by :meth:`init_weights`.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                 *, init: Callable[[], None] | None = None):
        self.module = module
        self.optimizer = optimizer
        self._init = init

    def init_weights(self) -> None:
        if self._init is not None:
            self._init()

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
        self.optimizer.step()
        return {}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
