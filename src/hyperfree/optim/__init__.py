"""Optimisers: AGD, its parameter kinds, rules, pieces and presets (the step itself is
:func:`hyperfree.optim.functional.agd`)."""
from .agd import AGD, KindsNote
from .batchnorm import recalibrate_batchnorm
from .init import orthogonal_init_
from .init_model import init_weights
from .kinds import KIND_NAMES, Kind, classify, register_kinds
from .pieces import (Ball, Fading, Fresh, Frobenius, Gradient, Momentum, PolyAverage,
                     Rotation, SelfEstimate, Spectral, Sphere)
from .presets import AUTO, DEFAULT_PRESET, PRESETS, Preset, get_preset, list_presets

__all__ = ["AGD", "KindsNote", "init_weights", "Kind", "KIND_NAMES", "classify", "register_kinds",
           "Preset", "PRESETS", "AUTO", "DEFAULT_PRESET", "get_preset",
           "list_presets", "orthogonal_init_", "Frobenius", "Spectral", "Gradient", "Momentum",
           "SelfEstimate", "Fresh", "Fading", "Sphere", "Ball", "Rotation", "PolyAverage",
           "recalibrate_batchnorm"]
