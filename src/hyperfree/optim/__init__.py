"""Optimisers: AGD (Bernstein et al., 2023) and its initialisation."""
from .agd import AGD, agd_update, target_scale
from .init import orthogonal_init_

__all__ = ["AGD", "agd_update", "target_scale", "orthogonal_init_"]
