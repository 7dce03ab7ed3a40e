"""Hypergradient optimiser towers (Chandra et al., *Gradient Descent: The Ultimate Optimizer*,
NeurIPS 2022): optimisers whose hyperparameters are tuned online by other optimisers.

>>> from hyperfree import hyper
>>> stack = hyper.parse("adam(1e-3) / sgd(1e-5)")  # = hyper.Adam(1e-3, optimizer=hyper.SGD(1e-5))
>>> net = hyper.HyperModule(model, stack)               # doctest: +SKIP
>>> loss = loss_fn(net(x), y); net.step(loss)           # doctest: +SKIP
>>> net.hyperparameters()                               # doctest: +SKIP
[{'lr': 0.00101, 'beta1': 0.9, 'beta2': 0.999}, {'lr': 1e-05}]

See ``docs/hyper.md``.
"""
from ._divergence import NonFiniteStepWarning, TowerDivergedError
from .module import HyperModule
from .optimizers import (OPTIMIZERS, SGD, AdaGrad, Adam, AdamLR, HyperOptimizer, RMSProp,
                         RMSPropLR, SGDPerParam)
from .parse import StackSyntaxError, parse

__all__ = ["HyperModule", "NonFiniteStepWarning", "TowerDivergedError", "HyperOptimizer", "SGD",
           "SGDPerParam", "AdaGrad", "RMSProp", "RMSPropLR", "Adam", "AdamLR", "OPTIMIZERS",
           "parse", "StackSyntaxError"]
