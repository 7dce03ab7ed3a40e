"""Built-in registry entries: AGD and the PyTorch baselines the AGD paper compares against."""
from __future__ import annotations

import torch
from torch import nn

from .agd import AGD
from .registry import OptimArgs, Stepper, TorchStepper, register_optimizer


def _refuse(name: str, args: OptimArgs, *fields: str) -> None:
    for field in fields:
        if getattr(args, field) is not None:
            raise ValueError(f"--{field} is not used by {name}: it has no {field}; drop the flag")


def _require_positive(name: str, field: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} needs --{field} > 0, got {value}")


class AGDStepper(TorchStepper):
    """TorchStepper that logs AGD's automatic step size η of each step."""

    def step(self, loss):
        super().step(loss)
        return {"eta": self.optimizer.eta.detach()}


@register_optimizer("agd", description="Automatic Gradient Descent (paper-exact; no learning rate)")
def _agd(model: nn.Module, args: OptimArgs) -> Stepper:
    _refuse("agd", args, "lr", "momentum")
    opt = AGD(model, gain=1.0 if args.gain is None else args.gain)
    return AGDStepper(model, opt, init=opt.init_weights)


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
