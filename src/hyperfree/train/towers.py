"""The towers in the harness: ``build_optimizer("adam(1e-3)/sgd(1e-5)", ...)``.

Importing this module (the package's ``__init__`` does) registers :func:`parse_spec` with
:func:`hyperfree.train.optimizers.register_spec_parser`; the harness then accepts every stack
that :func:`hyperfree.hyper.parse` accepts (``hyperfree train --optimizer "sgd(0.01)/sgd(1e-4)"``).
The stepper logs every hyperparameter of every level (``lr``, ``momentum``, ``alpha``,
``beta1``, ``beta2`` for level 0; ``lr@1`` … for level 1, …). Under ``torchrun`` the
:class:`HyperModule` averages gradients and hypergradients itself (one all-reduce per step), so
the loop does not wrap it in DDP (:attr:`HyperStepper.syncs_gradients`).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from hyperfree.hyper import OPTIMIZERS, HyperModule, parse

from .optimizers import OptimArgs, register_spec_parser
from .steppers import Stepper

__all__ = ["HyperStepper", "parse_spec"]


class HyperStepper:
    """The :class:`~hyperfree.train.steppers.Stepper` around a :class:`HyperModule`."""

    syncs_gradients = True  # HyperModule all-reduces itself: the loop must not add DDP

    def __init__(self, module: HyperModule) -> None:
        self.module = module

    def init_weights(self) -> None:
        """Towers keep PyTorch's default initialisation: nothing to do."""

    def train(self) -> None:
        """Nothing to switch: a tower trains and evaluates at the same weights."""

    def eval(self) -> None:
        """Nothing to switch: a tower trains and evaluates at the same weights."""

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        return self.module.step(loss)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


def _looks_like_stack(text: str) -> bool:
    key = text.strip().lower()
    return "/" in key or "(" in key or key in OPTIMIZERS


def parse_spec(text: str) -> Callable[[nn.Module, OptimArgs], Stepper] | None:
    """A builder for the stack ``text``; ``None`` if ``text`` is clearly not a stack.

    Text that looks like a stack but is malformed raises ``StackSyntaxError`` here, pointing at
    the offending token.
    """
    if not isinstance(text, str) or not _looks_like_stack(text):
        return None
    parse(text)  # validate now, so errors surface before any model is touched

    def build(model: nn.Module, args: OptimArgs) -> Stepper:
        return HyperStepper(HyperModule(model, parse(text)))

    return build


register_spec_parser(parse_spec)
