"""Optimisers: AGD, its parameter kinds and rules."""
from .agd import AGD, init_weights
from .init import orthogonal_init_
from .kinds import KIND_NAMES, Kind, classify, register_kinds
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset, list_presets

__all__ = ["AGD", "init_weights", "Kind", "KIND_NAMES", "classify", "register_kinds", "Preset",
           "PRESETS", "DEFAULT_PRESET", "get_preset", "list_presets", "orthogonal_init_"]
