"""hyperfree: deep learning without hyperparameters, for PyTorch.

* :class:`hyperfree.AGD` — Automatic Gradient Descent (Bernstein et al., 2023).
* :mod:`hyperfree.hyper` — hypergradient optimiser towers (Chandra et al., 2022).
"""
from ._version import __version__
from .optim.agd import AGD

__all__ = ["AGD", "__version__"]
