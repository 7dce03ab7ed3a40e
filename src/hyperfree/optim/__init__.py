"""Optimisers: AGD, its parameter kinds, rules, pieces and presets (the step itself is
:func:`hyperfree.optim.functional.agd`)."""
from .agd import AGD, KindsNote, init_weights
from .init import orthogonal_init_
from .kinds import KIND_NAMES, Kind, classify, is_normalised, register_kinds
from .pieces import Ball, Fresh, Frobenius, Gradient, Momentum, SelfEstimate, Spectral, Sphere
from .presets import (AUTO, DEFAULT_PRESET, PRESETS, Preset, choose_preset, get_preset,
                      list_presets)

__all__ = ["AGD", "KindsNote", "init_weights", "Kind", "KIND_NAMES", "classify", "register_kinds",
           "is_normalised", "Preset", "PRESETS", "AUTO", "DEFAULT_PRESET", "get_preset",
           "choose_preset", "list_presets", "orthogonal_init_", "Frobenius", "Spectral",
           "Gradient", "Momentum", "SelfEstimate", "Fresh", "Sphere", "Ball"]
