"""Optimisers: AGD, its parameter kinds and rules, and the registry the harness builds from."""
from .agd import AGD
from .init import orthogonal_init_
from .kinds import KIND_NAMES, Kind, classify, register_kinds
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset, list_presets
from .registry import (OptimArgs, OptimInfo, Stepper, TorchStepper, build_optimizer,
                       list_optimizers, register_optimizer, register_spec_parser)

__all__ = ["AGD", "Kind", "KIND_NAMES", "classify", "register_kinds", "Preset", "PRESETS",
           "DEFAULT_PRESET", "get_preset", "list_presets", "orthogonal_init_", "OptimArgs",
           "OptimInfo", "Stepper", "TorchStepper", "build_optimizer", "list_optimizers",
           "register_optimizer", "register_spec_parser"]
