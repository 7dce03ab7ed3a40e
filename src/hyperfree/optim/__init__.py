"""Optimisers: AGD and the registry the training harness builds optimisers from."""
from .agd import AGD, agd_update, target_scale
from .init import orthogonal_init_
from .registry import (OptimArgs, OptimInfo, Stepper, TorchStepper, build_optimizer,
                       list_optimizers, register_optimizer, register_spec_parser)

__all__ = ["AGD", "agd_update", "target_scale", "orthogonal_init_", "OptimArgs", "OptimInfo", "Stepper",
           "TorchStepper", "build_optimizer", "list_optimizers", "register_optimizer",
           "register_spec_parser"]
