"""BatchNorm statistics for weights the network was not trained at: :func:`recalibrate_batchnorm`.

A BatchNorm layer's running mean and variance are averages over the forward passes of
training, i.e. over the TRAINED weights. Evaluating at other weights (AGD's averaged weights,
:meth:`hyperfree.optim.AGD.eval`; Schedule-Free's ``x``; SWA) with those statistics normalises
by the wrong moments. The remedy of Izmailov et al. 2018 (SWA, ``torch.optim.swa_utils.
update_bn``) and of the Schedule-Free README: reset the statistics and recompute them over a few
training batches at the weights being evaluated, in training mode, as a cumulative average.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm", "batchnorm_layers"]


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], *,
                          forward: Callable[[Any], Any] | None = None) -> int:
    """Recompute the running statistics of every BatchNorm layer of ``model`` at its current
    weights, from ``batches`` (inputs; ``(input, target)`` pairs pass the input), and return how
    many were used. ``forward(batch)`` runs the model on a batch when the default
    (``model(input)``) does not fit. The model is put back in the mode it was in; a model with
    no BatchNorm is not run. ``ValueError`` if ``batches`` is empty (the statistics are then
    left as they were, never reset to nothing)."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise ValueError("recalibrate_batchnorm got no batches: pass an iterable of training "
                         "inputs (e.g. itertools.islice(train_loader, 50))")
    run = forward or (lambda b: model(b[0] if isinstance(b, (tuple, list)) else b))
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    was = model.training
    model.train()
    n = 0
    try:
        for batch in itertools.chain([first], it):
            run(batch)
            n += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was)
    return n
