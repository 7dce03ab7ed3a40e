"""The optimiser registry: every optimiser the harness offers, built by name.

An entry builds a :class:`~hyperfree.train.steppers.Stepper`, the one object the training loop
talks to, from a model and the user's optimiser flags (:class:`OptimArgs`). This module holds
the registry and the built-in entries: AGD and the PyTorch baselines the AGD paper compares
against. :mod:`hyperfree.train.peers` adds the third-party learning-rate-free optimisers and
:mod:`hyperfree.train.towers` the hypergradient stacks; the package's ``__init__`` imports both,
so every entry is registered before any look-up.

Names that are not registered are offered, in order, to the registered *spec parsers*
(:func:`register_spec_parser`); the towers use this to accept stacks such as
``"sgd(0.01)/sgd(1e-4)"``.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Iterator

import torch
from torch import nn

from hyperfree._registry import Registry
from hyperfree.optim import AGD

from .steppers import Stepper, TorchStepper

__all__ = ["OptimArgs", "OptimInfo", "Builder", "register_optimizer", "register_spec_parser",
           "get_optimizer_info", "iter_optimizers", "list_optimizers", "build_optimizer"]


@dataclasses.dataclass(frozen=True)
class OptimArgs:
    """The optimiser flags a user may give (``None`` = not given)."""

    lr: float | None = None
    momentum: float | None = None
    gain: float | None = None


Builder = Callable[[nn.Module, OptimArgs], Stepper]


@dataclasses.dataclass(frozen=True)
class OptimInfo:
    """A registered optimiser: its builder and what the CLI says about it."""

    name: str
    builder: Builder
    description: str
    requires: str | None = None  # pip package (extra) that must be importable, if any
    module: str | None = None  # its import name, when it differs from the package's


_STACK_HINT = " or a hypergradient stack such as 'sgd(0.01)/sgd(1e-4)'"
_REGISTRY: Registry[OptimInfo] = Registry("optimiser", hint=_STACK_HINT)
_SPEC_PARSERS: list[Callable[[str], Builder | None]] = []


def register_optimizer(name: str, *, description: str, requires: str | None = None,
                       module: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(model, args) -> Stepper`` under ``name`` (lowercase).

    ``requires`` names the pip package the builder needs (``module`` its import name if that
    differs); a missing one is a one-line ValueError saying what to install.
    """
    _REGISTRY.check_name(name)

    def deco(builder: Builder) -> Builder:
        _REGISTRY.register(name, OptimInfo(name, builder, description, requires, module))
        return builder

    return deco


def register_spec_parser(parser: Callable[[str], Builder | None]) -> None:
    """Register ``parser(text) -> builder or None`` for names not in the registry."""
    if parser not in _SPEC_PARSERS:
        _SPEC_PARSERS.append(parser)


def list_optimizers() -> list[str]:
    """Names of all registered optimisers, sorted."""
    return sorted(_REGISTRY.names())


def iter_optimizers() -> Iterator[OptimInfo]:
    """Every registered :class:`OptimInfo`, sorted by name."""
    return iter(sorted(_REGISTRY, key=lambda info: info.name))


def get_optimizer_info(name: str) -> OptimInfo:
    """The :class:`OptimInfo` registered as ``name``; ValueError listing the choices if none."""
    return _REGISTRY.get(name)


def _check_requires(info: OptimInfo) -> None:
    if info.requires is None:
        return
    try:
        importlib.import_module(info.module or info.requires.replace("-", "_"))
    except ImportError:
        raise ValueError(f"optimiser {info.name!r} needs the package {info.requires!r}: "
                         f"pip install 'hyperfree[peers]' (or pip install {info.requires})") from None


def build_optimizer(spec: str, model: nn.Module, args: OptimArgs = OptimArgs()) -> Stepper:
    """Build the stepper named by ``spec`` for ``model`` (registry name or parsed stack)."""
    if spec in _REGISTRY:
        info = _REGISTRY.get(spec)
        _check_requires(info)
        return info.builder(model, args)
    for parser in _SPEC_PARSERS:
        builder = parser(spec)
        if builder is not None:
            return builder(model, args)
    get_optimizer_info(spec)  # neither registered nor a stack: raises, listing the choices
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- built-in entries
def _refuse(name: str, args: OptimArgs, *fields: str) -> None:
    for field in fields:
        if getattr(args, field) is not None:
            raise ValueError(f"--{field} is not used by {name}: it has no {field}; drop the flag")


def _require_positive(name: str, field: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} needs --{field} > 0, got {value}")


@register_optimizer("agd", description="Automatic Gradient Descent (paper-exact; no learning rate)")
def _agd(model: nn.Module, args: OptimArgs) -> Stepper:
    _refuse("agd", args, "lr", "momentum")
    opt = AGD(model, gain=1.0 if args.gain is None else args.gain)
    return TorchStepper(model, opt, log_name="eta", init=opt.init_weights)


@register_optimizer("sgd", description="torch.optim.SGD (default lr 0.1, momentum 0)")
def _sgd(model: nn.Module, args: OptimArgs) -> Stepper:
    _refuse("sgd", args, "gain")
    lr = 0.1 if args.lr is None else args.lr
    _require_positive("sgd", "lr", lr)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=args.momentum or 0.0, foreach=True)
    return TorchStepper(model, opt)


@register_optimizer("adam", description="torch.optim.Adam (default lr 1e-3)")
def _adam(model: nn.Module, args: OptimArgs) -> Stepper:
    _refuse("adam", args, "gain", "momentum")
    lr = 1e-3 if args.lr is None else args.lr
    _require_positive("adam", "lr", lr)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    return TorchStepper(model, opt)
