"""The optimiser registry: every optimiser the harness offers, built by name.

An entry builds a :class:`Stepper` — the one object the training loop talks to — from a model
and the user's optimiser flags. A stepper owns the whole of one optimisation step (zero the
gradients, back-propagate, update), so plain ``torch.optim`` optimisers, AGD and hypergradient
towers (which need to own the backward pass) look the same to the loop.

Names that are not registered are offered, in order, to the registered *spec parsers*
(``register_spec_parser``); the hypergradient package uses this to accept stacks such as
``"sgd(0.01)/sgd(1e-4)"``.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "OptimArgs",
    "OptimInfo",
    "Stepper",
    "TorchStepper",
    "register_optimizer",
    "register_spec_parser",
    "get_optimizer_info",
    "list_optimizers",
    "build_optimizer",
]


@dataclasses.dataclass(frozen=True)
class OptimArgs:
    """The optimiser flags a user may give (``None`` = not given)."""

    lr: float | None = None
    momentum: float | None = None
    gain: float | None = None


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
    """A stepper around any ``torch.optim.Optimizer`` (``step()`` may return a tensor to log)."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                 *, log_name: str | None = None, init: Callable[[], None] | None = None):
        self.module = module
        self.optimizer = optimizer
        self._log_name = log_name
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
        out = self.optimizer.step()
        if self._log_name is not None and isinstance(out, Tensor):
            return {self._log_name: out.detach()}
        return {}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


Builder = Callable[[nn.Module, OptimArgs], Stepper]


@dataclasses.dataclass(frozen=True)
class OptimInfo:
    """A registered optimiser: its builder and what the CLI says about it."""

    name: str
    builder: Builder
    description: str
    requires: str | None = None  # pip package (extra) that must be importable, if any
    module: str | None = None  # its import name, when it differs from the package's


_REGISTRY: dict[str, OptimInfo] = {}
_SPEC_PARSERS: list[Callable[[str], Builder | None]] = []
# Modules that register entries when imported (kept lazy so `import hyperfree` stays light).
_PLUGIN_MODULES: list[str] = ["hyperfree.optim.builtin", "hyperfree.hyper.integration",
                               "hyperfree.optim.peers"]
_loaded = False
_loading = False


def register_optimizer(name: str, *, description: str, requires: str | None = None,
                       module: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(model, args) -> Stepper`` under ``name`` (lowercase).

    ``requires`` names the pip package the builder needs (``module`` its import name if that
    differs); a missing one is a one-line ValueError saying what to install.
    """
    if name != name.lower() or not name:
        raise ValueError(f"optimiser name {name!r} must be non-empty lowercase")

    def deco(builder: Builder) -> Builder:
        if not _loading:
            _load_plugins()  # so that a user's entry cannot shadow a built-in one
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"optimiser {name!r} is already registered")
        _REGISTRY[name] = OptimInfo(name, builder, description, requires, module)
        return builder

    return deco


def register_spec_parser(parser: Callable[[str], Builder | None]) -> None:
    """Register ``parser(text) -> builder or None`` for names not in the registry."""
    if parser not in _SPEC_PARSERS:
        _SPEC_PARSERS.append(parser)


def add_plugin_module(module: str) -> None:
    """Ask the registry to import ``module`` (which registers entries) before any look-up."""
    global _loaded
    if module not in _PLUGIN_MODULES:
        _PLUGIN_MODULES.append(module)
        _loaded = False


def _load_plugins() -> None:
    global _loaded, _loading
    if not _loaded and not _loading:
        _loading = True
        try:
            for mod in _PLUGIN_MODULES:
                importlib.import_module(mod)
        finally:
            _loading = False
        _loaded = True


def list_optimizers() -> list[str]:
    """Names of all registered optimisers, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def iter_optimizers() -> Iterator[OptimInfo]:
    _load_plugins()
    return iter([_REGISTRY[k] for k in sorted(_REGISTRY)])


def get_optimizer_info(name: str) -> OptimInfo:
    _load_plugins()
    try:
        return _REGISTRY[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown optimiser {name!r}; choose one of {', '.join(sorted(_REGISTRY))}"
                         " or a hypergradient stack such as 'sgd(0.01)/sgd(1e-4)'") from None


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
    _load_plugins()
    key = spec.strip().lower()
    if key in _REGISTRY:
        info = _REGISTRY[key]
        _check_requires(info)
        return info.builder(model, args)
    for parser in _SPEC_PARSERS:
        builder = parser(spec)
        if builder is not None:
            return builder(model, args)
    get_optimizer_info(spec)  # raises the helpful error
    raise AssertionError("unreachable")
