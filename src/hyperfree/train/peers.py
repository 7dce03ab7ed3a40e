"""Registry entries for the learning-rate-free optimisers people use (the ``peers`` extra).

Each entry wraps a third-party optimiser, at its documented defaults, as a
:class:`~hyperfree.train.steppers.Stepper`, so ``hyperfree train --optimizer prodigy`` and the
``peers`` experiment drive it exactly like AGD. None of them takes ``--lr``/``--momentum``/
``--gain``: the point of the race is that nobody tunes anything. A missing package raises a
one-line ``ValueError`` naming it (``pip install 'hyperfree[peers]'``).

* ``prodigy`` — ``prodigyopt.Prodigy(lr=1.0)`` (Mishchenko & Defazio 2023, arXiv 2306.06101);
  logs ``d_lr`` = d · lr.
* ``dadapt-adam`` — ``dadaptation.DAdaptAdam(lr=1.0)`` (Defazio & Mishchenko 2023, arXiv
  2301.07733); logs ``d_lr`` = d · lr.
* ``schedulefree-adamw`` — ``schedulefree.AdamWScheduleFree()`` (Defazio et al. 2024, arXiv
  2405.15682); trains at y, evaluated at x through the stepper's ``train()``/``eval()``.
* ``dog`` — ``dog.DoG()`` plus ``dog.PolynomialDecayAverager(γ=8)`` (Ivgi, Hinder & Carmon 2023,
  arXiv 2302.12022); evaluated with the averaged weights, as its README requires; logs ``eta``.
* ``gdtuo`` — ``gdtuo.ModuleWrapper`` with the tower ``SGD(0.01) / SGD(1e-5)`` (Chandra et al.
  2022, arXiv 1909.13371), the paper library's own; logs ``lr`` = α of level 0.

DoG and gdtuo need more than ``optimizer.step()`` (an averaged copy of the model; a
``begin()`` before each forward pass and ``backward(create_graph=True)``), so they get their
own stepper classes below.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from .optimizers import OptimArgs, register_optimizer
from .steppers import Stepper, TorchStepper

__all__ = ["PEER_PACKAGES", "import_peer", "ScheduleFreeStepper", "DoGStepper", "GdtuoStepper"]

# registry name -> (importable module, pip package)
PEER_PACKAGES: dict[str, tuple[str, str]] = {
    "prodigy": ("prodigyopt", "prodigyopt"),
    "dadapt-adam": ("dadaptation", "dadaptation"),
    "schedulefree-adamw": ("schedulefree", "schedulefree"),
    "dog": ("dog", "dog-optimizer"),
    "gdtuo": ("gradient_descent_the_ultimate_optimizer", "gradient-descent-the-ultimate-optimizer"),
}


def import_peer(name: str) -> ModuleType:
    """Import the package behind peer ``name``; ValueError naming the pip package if missing."""
    module, package = PEER_PACKAGES[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"optimiser {name!r} needs the package {package!r}: "
                         f"pip install 'hyperfree[peers]' (or pip install {package})") from None


class _ScaleLogStepper(TorchStepper):
    """TorchStepper that logs ``d · lr`` of the first group (Prodigy, D-Adaptation)."""

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        super().step(loss)
        group = self.optimizer.param_groups[0]
        return {"d_lr": torch.tensor(float(group["d"]) * float(group["lr"]))}


class ScheduleFreeStepper(TorchStepper):
    """Schedule-Free AdamW: trains at ``y``, evaluates at ``x`` via ``train()``/``eval()``.

    The optimiser starts in eval mode; ``step`` switches it to train mode if nobody did, so it
    also works in a loop that never calls ``train()``.
    """

    averaged = True  # BatchNorm statistics are recomputed at x (its README's caveat)

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        if not self.optimizer.param_groups[0].get("train_mode", True):
            self.optimizer.train()
        return super().step(loss)


class DoGStepper:
    """DoG with polynomial-decay iterate averaging (γ = 8), as the DoG README requires.

    Training steps move the model's weights ``x_t``; ``eval()`` swaps the averaged weights
    ``x̄_t`` into the model and ``train()`` swaps ``x_t`` back. The logged ``eta`` is DoG's
    step size ``r̄_t / sqrt(Σ‖g_i‖² + ε)``.
    """

    averaged = True

    def __init__(self, module: nn.Module, dog: ModuleType) -> None:
        self.module = module
        self.optimizer = dog.DoG(module.parameters())
        self.averager = dog.PolynomialDecayAverager(module)
        self._saved: list[Tensor] | None = None

    def init_weights(self) -> None:
        """PyTorch's default initialisation; the average starts from it."""
        self.averager.av_model.load_state_dict(self.module.state_dict())

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        self.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.averager.step()
        eta = self.optimizer.param_groups[0]["eta"][0]
        return {"eta": eta.detach().reshape(()) if isinstance(eta, Tensor) else torch.tensor(eta)}

    @torch.no_grad()
    def eval(self) -> None:
        if self._saved is None:
            self._saved = [p.detach().clone() for p in self.module.parameters()]
            for p, q in zip(self.module.parameters(), self.averager.av_model.parameters()):
                p.copy_(q)

    @torch.no_grad()
    def train(self) -> None:
        if self._saved is not None:
            for p, saved in zip(self.module.parameters(), self._saved):
                p.copy_(saved)
            self._saved = None

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "averager": self.averager.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.averager.load_state_dict(state["averager"])


def _tower_levels(top: Any) -> list[Any]:
    """The gdtuo optimisers of a ModuleWrapper's tower, bottom-up (NoOp excluded)."""
    levels, opt = [], top
    while hasattr(opt, "parameters") and isinstance(getattr(opt, "parameters"), dict):
        levels.append(opt)
        opt = getattr(opt, "optimizer", None)
    return levels


class GdtuoStepper:
    """The hypergradient paper's library (gdtuo) driven as a Stepper.

    Per its README: ``begin()`` before each forward pass, ``zero_grad()``,
    ``loss.backward(create_graph=True)``, ``step()``. ``begin()`` runs at construction and at the
    end of every ``step`` so the next forward pass is tracked. gdtuo replaces the module's
    parameters by new tensors each step, so a stepper state holds every level's hyperparameters.
    """

    def __init__(self, module: nn.Module, gdtuo: ModuleType, lr: float = 0.01,
                 hyper_lr: float = 1e-5) -> None:
        self.module = module
        self.wrapper = gdtuo.ModuleWrapper(module, optimizer=gdtuo.SGD(lr, optimizer=gdtuo.SGD(
            hyper_lr)))
        self.wrapper.initialize()
        self.wrapper.begin()

    def init_weights(self) -> None:
        """PyTorch's default initialisation (the README's ``initialize`` is a no-op here)."""

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        self.wrapper.zero_grad()
        with warnings.catch_warnings():  # gdtuo's README: this warning "is normal and expected"
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            loss.backward(create_graph=True)
        self.wrapper.step()
        self.wrapper.begin()
        return {"lr": self.wrapper.optimizer.parameters["alpha"].detach().reshape(()).clone()}

    def state_dict(self) -> dict[str, Any]:
        return {"levels": [{k: v.detach().clone() for k, v in lvl.parameters.items()}
                           for lvl in _tower_levels(self.wrapper.optimizer)]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        levels = _tower_levels(self.wrapper.optimizer)
        if len(levels) != len(state["levels"]):
            raise ValueError(f"gdtuo state has {len(state['levels'])} levels but the tower has "
                             f"{len(levels)}; load a state saved by the same tower")
        for lvl, saved in zip(levels, state["levels"]):
            for key, value in saved.items():
                lvl.parameters[key].copy_(value)


@register_optimizer("prodigy", requires="prodigyopt",
                    description="Prodigy (prodigyopt, lr=1.0 defaults; learning-rate-free Adam)")
def _prodigy(model: nn.Module, args: OptimArgs) -> Stepper:
    opt = import_peer("prodigy").Prodigy(model.parameters(), lr=1.0)
    return _ScaleLogStepper(model, opt)


@register_optimizer("dadapt-adam", requires="dadaptation",
                    description="D-Adaptation Adam (dadaptation.DAdaptAdam, lr=1.0 defaults)")
def _dadapt_adam(model: nn.Module, args: OptimArgs) -> Stepper:
    opt = import_peer("dadapt-adam").DAdaptAdam(model.parameters(), lr=1.0)
    return _ScaleLogStepper(model, opt)


@register_optimizer("schedulefree-adamw", requires="schedulefree",
                    description="Schedule-Free AdamW (schedulefree, documented defaults)")
def _schedulefree(model: nn.Module, args: OptimArgs) -> Stepper:
    opt = import_peer("schedulefree-adamw").AdamWScheduleFree(model.parameters())
    return ScheduleFreeStepper(model, opt)


@register_optimizer("dog", requires="dog-optimizer", module="dog",
                    description="DoG (dog-optimizer) with its polynomial-decay averaging")
def _dog(model: nn.Module, args: OptimArgs) -> Stepper:
    return DoGStepper(model, import_peer("dog"))


@register_optimizer("gdtuo", requires="gradient-descent-the-ultimate-optimizer",
                    description="the hypergradient paper's own library: SGD(0.01) / SGD(1e-5)")
def _gdtuo(model: nn.Module, args: OptimArgs) -> Stepper:
    mod = import_peer("gdtuo")
    return GdtuoStepper(model, importlib.import_module(f"{mod.__name__}.gdtuo"))
