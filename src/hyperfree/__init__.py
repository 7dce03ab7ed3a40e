"""hyperfree: deep learning without hyperparameters, for PyTorch.

* :class:`hyperfree.AGD` — Automatic Gradient Descent (Bernstein et al., 2023).
* :mod:`hyperfree.hyper` — hypergradient optimiser towers (Chandra et al., 2022).

``AGD`` and the subpackages are imported on first use (PEP 562), so ``import hyperfree`` does
not import torch: the ``hyperfree`` command starts, and handles Ctrl-C, before torch's few
seconds of import.
"""
from __future__ import annotations

import sys
from typing import Any

from ._version import __version__

__all__ = ["AGD", "__version__"]


def __getattr__(name: str) -> Any:
    """``hyperfree.AGD`` and ``hyperfree.<subpackage>``, imported when first asked for.

    Absolute ``import hyperfree.<name>`` statements: ``from . import <name>`` would ask this
    very function for the attribute again."""
    if name == "AGD":
        import hyperfree.optim

        return hyperfree.optim.AGD
    if name == "optim":
        import hyperfree.optim
    elif name == "hyper":
        import hyperfree.hyper
    elif name == "models":
        import hyperfree.models
    elif name == "data":
        import hyperfree.data
    elif name == "train":
        import hyperfree.train
    elif name == "experiments":
        import hyperfree.experiments
    elif name == "cli":
        import hyperfree.cli
    else:
        raise AttributeError(f"module 'hyperfree' has no attribute {name!r}")
    return sys.modules[f"hyperfree.{name}"]


def __dir__() -> list[str]:
    return sorted([*globals(), "AGD", "optim", "hyper", "models", "data", "train",
                   "experiments", "cli"])
