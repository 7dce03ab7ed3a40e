"""The optimiser registry: every optimiser the harness offers, built by name.

An entry builds a :class:`~hyperfree.train.steppers.Stepper`, the one object the training loop
talks to, from a model and the user's optimiser flags (:class:`OptimArgs`). This module holds
the registry and the built-in entries: AGD and the PyTorch baselines the AGD paper compares
against. :mod:`hyperfree.train.peers` adds the third-party learning-rate-free optimisers and
:mod:`hyperfree.train.towers` the hypergradient stacks; the package's ``__init__`` imports both,
so every entry is registered before any look-up.

Each entry declares the flags it takes and their defaults (``OptimInfo.defaults``): a flag the
entry does not take is refused, a bad value (an lr that is not a finite positive number or
overflows float32; a gain outside AGD's ``(0, 1e6]``, as ``--gain 1e300`` is; a negative weight
decay; an unknown schedule) is refused with the limit as it is, and :func:`resolve_optim_args`
fills in the defaults, so ``config.json`` records what actually ran (Adam's lr 1e-3, not
``null``).

The learning-rate optimisers (sgd, adam, adamw, muon) also take ``--schedule`` (constant,
cosine, linear) and ``--warmup-steps``; the training loop applies them
(:mod:`hyperfree.train.schedules`). AGD, the peers and the towers have no learning rate to
schedule and refuse both flags. AGD is registered once per update preset: ``agd`` is
:data:`hyperfree.optim.DEFAULT_PRESET` (``agd-auto``, the earlier default's name, is the same),
and ``agd-<preset>`` each of :data:`hyperfree.optim.PRESETS`.

Names that are not registered are offered, in order, to the registered *spec parsers*
(:func:`register_spec_parser`); the towers use this to accept stacks such as
``"sgd(0.01)/sgd(1e-4)"``. A stack carries its hyperparameters in its text.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import re
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from hyperfree._registry import Registry
from hyperfree.optim import AGD, AUTO, DEFAULT_PRESET, PRESETS
from hyperfree.optim._groups import MULTIPLIER_MAX

from .schedules import SCHEDULES
from .steppers import MuonStepper, Stepper, TorchStepper

__all__ = ["OptimArgs", "OptimInfo", "Builder", "AGDStepper", "register_optimizer",
           "register_spec_parser", "get_optimizer_info", "iter_optimizers", "list_optimizers",
           "resolve_optim_args", "build_optimizer", "reports_step_size", "divergence_hint",
           "GAIN_MAX"]

# torch's optimisers convert lr to float32, and overflow there is a RuntimeError mid-step:
# larger values are refused up front.
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# AGD's own bound on its gain (hyperfree.AGD refuses a larger one)
GAIN_MAX = MULTIPLIER_MAX


@dataclasses.dataclass(frozen=True)
class OptimArgs:
    """The optimiser flags a user may give (``None`` = not given)."""

    lr: float | None = None
    momentum: float | None = None
    gain: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    clip_grad_norm: float | None = None  # 0 = no clipping

    def given(self) -> list[str]:
        """The names of the flags that are set."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


Builder = Callable[[nn.Module, OptimArgs], Stepper]


@dataclasses.dataclass(frozen=True)
class OptimInfo:
    """A registered optimiser: its builder, the flags it takes, what the CLI says about it.

    ``defaults`` gives a default for every flag the optimiser takes; a ``None`` field there
    means it does not take that flag.
    """

    name: str
    builder: Builder
    description: str
    defaults: OptimArgs = OptimArgs()
    requires: str | None = None  # pip package (extra) that must be importable, if any
    module: str | None = None  # its import name, when it differs from the package's
    reports_eta: bool = False  # its stepper logs AGD's step size "eta" (runs default to "auto")


_SCHEDULE_FLAGS = ("schedule", "warmup_steps")
_STACK_HINT = " or a hypergradient stack such as 'sgd(0.01)/sgd(1e-4)'"
_REGISTRY: Registry[OptimInfo] = Registry("optimiser", hint=_STACK_HINT)
_SPEC_PARSERS: list[Callable[[str], Builder | None]] = []


def register_optimizer(name: str, *, description: str, defaults: OptimArgs = OptimArgs(),
                       requires: str | None = None, module: str | None = None,
                       reports_eta: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(model, args) -> Stepper`` under ``name`` (lowercase).

    The builder receives ``args`` already resolved: every flag of ``defaults`` set (the user's
    value or the default), every other flag ``None``. ``requires`` names the pip package the
    builder needs (``module`` its import name if that differs); a missing one is a one-line
    ValueError saying what to install. ``reports_eta``: the stepper logs its own step size
    ``"eta"`` (AGD), needs no schedule, and a run given no length is ``epochs="auto"``.
    """
    _REGISTRY.check_name(name)

    def deco(builder: Builder) -> Builder:
        _REGISTRY.register(name, OptimInfo(name, builder, description, defaults, requires,
                                           module, reports_eta))
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


def reports_step_size(spec: str) -> bool:
    """Whether the registered optimiser ``spec`` logs AGD's step size η (a stack: no)."""
    return spec in _REGISTRY and _REGISTRY.get(spec).reports_eta


def divergence_hint(spec: str) -> str:
    """What a user can change when ``spec`` diverged: the flag it takes (``--gain`` for AGD,
    ``--lr``), or, for a stack (which takes no flags), a smaller top-level step in its text."""
    if spec in _REGISTRY:
        takes = _REGISTRY.get(spec).defaults.given()
        if "gain" in takes:
            return "try a smaller --gain (AGD's step is gain·η/L) or another --optimizer"
        if "lr" in takes:
            return "try a smaller --lr or another --optimizer"
        return "try another --optimizer"
    levels = spec.split("/")
    match = re.search(r"\d[\d.]*(?:e-?\d+)?", levels[-1])
    if len(levels) < 2 or match is None:
        return "give the stack smaller step sizes in its text, or try another --optimizer"
    smaller = _short(float(match.group()) / 100)
    levels[-1] = levels[-1][:match.start()] + smaller + levels[-1][match.end():]
    return (f"a stack takes no --lr or --gain: make its top level's step smaller in the text, "
            f"e.g. --optimizer '{'/'.join(levels)}', or try another --optimizer")


def _check_requires(info: OptimInfo) -> None:
    if info.requires is None:
        return
    try:
        importlib.import_module(info.module or info.requires.replace("-", "_"))
    except ImportError:
        raise ValueError(f"optimiser {info.name!r} needs the package {info.requires!r}: pip "
                         f"install 'hyperfree[peers]' (or pip install {info.requires})") from None


def _check_value(name: str, flag: str, value: object) -> None:
    """ValueError (naming the value) unless ``value`` is valid for ``--flag`` of ``name``."""
    if flag == "schedule":
        if value not in SCHEDULES:
            raise ValueError(f"{name} needs --schedule one of {', '.join(SCHEDULES)}, got "
                             f"{value!r}")
        return
    if flag == "warmup_steps":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} needs --warmup-steps an integer >= 0, got {value!r}")
        return
    number = float(value)  # type: ignore[arg-type]
    if flag == "momentum":
        ok, need = math.isfinite(number) and 0 <= number < 1, "in [0, 1)"
    elif flag in ("weight_decay", "clip_grad_norm"):
        ok, need = 0 <= number <= _FLOAT32_MAX, f"in [0, {_short(_FLOAT32_MAX)}]"
    elif flag == "gain":
        ok, need = 0 < number <= GAIN_MAX, f"in (0, {_short(GAIN_MAX)}] (AGD's limit)"
    else:
        ok, need = 0 < number <= _FLOAT32_MAX, f"in (0, {_short(_FLOAT32_MAX)}] (float32's limit)"
    if not ok:
        raise ValueError(f"{name} needs --{_flag(flag)} {need}, got {number:g}")


def _short(x: float) -> str:
    """``1e6``, ``3.403e38``: a limit as a user would type it."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{x:.4g}")


def _flag(field: str) -> str:
    return field.replace("_", "-")


def resolve_optim_args(spec: str, args: OptimArgs = OptimArgs()) -> OptimArgs:
    """``args`` checked against ``spec``'s entry, its defaults filled in (what will run).

    A flag the entry does not take, or a bad value, is a one-line ValueError. A stack (spec
    parser) takes no flags: its ``args`` come back unchanged after the parser's own checks.
    """
    if spec not in _REGISTRY:
        if _parse(spec) is None:
            get_optimizer_info(spec)  # neither registered nor a stack: raises, listing choices
        for flag in args.given():
            raise ValueError(f"--{_flag(flag)} cannot be combined with the stack {spec!r}: the "
                             "stack text carries its hyperparameters, e.g. "
                             "'sgd(0.01, 0.9)/sgd(1e-4)'")
        return args
    info = _REGISTRY.get(spec)
    takes = info.defaults.given()
    for flag in args.given():
        if flag not in takes:
            offer = ", ".join(f"--{_flag(f)}" for f in takes) or \
                "no flags (it runs at its defaults)"
            why = "it has no learning rate to schedule; " if flag in _SCHEDULE_FLAGS else ""
            raise ValueError(f"--{_flag(flag)} is not used by {info.name}: {why}it takes "
                             f"{offer}; drop the flag")
    resolved = OptimArgs(**{f: getattr(args, f) if getattr(args, f) is not None
                            else getattr(info.defaults, f) for f in takes})
    for flag in takes:
        _check_value(info.name, flag, getattr(resolved, flag))
    return resolved


def _parse(spec: str) -> Builder | None:
    for parser in _SPEC_PARSERS:
        builder = parser(spec)
        if builder is not None:
            return builder
    return None


def build_optimizer(spec: str, model: nn.Module, args: OptimArgs = OptimArgs()) -> Stepper:
    """Build the stepper named by ``spec`` for ``model`` (registry name or parsed stack)."""
    resolved = resolve_optim_args(spec, args)
    if spec not in _REGISTRY:
        builder = _parse(spec)
        assert builder is not None  # resolve_optim_args raised otherwise
        return builder(model, resolved)
    info = _REGISTRY.get(spec)
    _check_requires(info)
    return info.builder(model, resolved)


# ---------------------------------------------------------------- built-in entries
class AGDStepper(TorchStepper):
    """TorchStepper that logs AGD's automatic step size η of each step (``group["eta"]``)."""

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        super().step(loss)
        return {"eta": self.optimizer.param_groups[0]["eta"].detach()}


def _agd_entry(preset: str) -> Builder:
    def build(model: nn.Module, args: OptimArgs) -> Stepper:
        opt = AGD(model, preset=preset, gain=args.gain)
        return AGDStepper(model, opt, init=opt.init_weights)

    build.__name__ = build.__qualname__ = f"_agd_{preset.replace('-', '_')}"
    build.__doc__ = f"AGD with the {preset!r} preset."
    return build


register_optimizer("agd", description=f"Automatic Gradient Descent, preset {DEFAULT_PRESET!r} "
                   "(no learning rate; gain 1)", defaults=OptimArgs(gain=1.0), reports_eta=True)(
    _agd_entry(DEFAULT_PRESET))

# the learning-rate optimisers: their lr may follow a schedule (schedules.py), and their
# gradients may be clipped to a global norm (clip_grad_norm 0 = never)
_SCHEDULED = dict(schedule="constant", warmup_steps=0, clip_grad_norm=0.0)


@register_optimizer("sgd", description="torch.optim.SGD (default lr 0.1, momentum 0)",
                    defaults=OptimArgs(lr=0.1, momentum=0.0, **_SCHEDULED))
def _sgd(model: nn.Module, args: OptimArgs) -> Stepper:
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, foreach=True)
    return TorchStepper(model, opt, clip=args.clip_grad_norm)


@register_optimizer("adam", description="torch.optim.Adam (default lr 1e-3)",
                    defaults=OptimArgs(lr=1e-3, **_SCHEDULED))
def _adam(model: nn.Module, args: OptimArgs) -> Stepper:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, foreach=True)
    return TorchStepper(model, opt, clip=args.clip_grad_norm)


@register_optimizer("adamw", description="torch.optim.AdamW (default lr 1e-3, weight decay "
                    "0.01: torch's defaults)",
                    defaults=OptimArgs(lr=1e-3, weight_decay=0.01, **_SCHEDULED))
def _adamw(model: nn.Module, args: OptimArgs) -> Stepper:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                            foreach=True)
    return TorchStepper(model, opt, clip=args.clip_grad_norm)


@register_optimizer("muon", description="torch.optim.Muon on 2-D hidden matrices (AGD kind "
                    "linear), AdamW on the rest; lr 1e-3 for both, Muon's momentum 0.95 and "
                    "weight decay 0.1 (torch's defaults)",
                    defaults=OptimArgs(lr=1e-3, momentum=0.95, weight_decay=0.1, **_SCHEDULED))
def _muon(model: nn.Module, args: OptimArgs) -> Stepper:
    return MuonStepper(model, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, clip=args.clip_grad_norm)


register_optimizer(f"agd-{AUTO}", description=f"the same as agd (preset {DEFAULT_PRESET!r}; "
                   "the earlier default's name)",
                   defaults=OptimArgs(gain=1.0), reports_eta=True)(_agd_entry(AUTO))
for _preset in PRESETS.values():
    register_optimizer(f"agd-{_preset.name}", description=f"AGD, preset {_preset.name!r}: "
                       f"{_preset.description}", defaults=OptimArgs(gain=1.0), reports_eta=True)(
        _agd_entry(_preset.name))
