"""AGD's initialisation without an optimiser: every trainable parameter by its kind's rule.

``init_weights(model)`` is ``AGD(model).init_weights()`` for code that builds the optimiser
after restoring weights (a framework's ``configure_optimizers``): the kinds are resolved as AGD
resolves them (:class:`._resolve.Resolution`: the table, declarations, one read forward), each
table or declared kind is initialised by its rule (``docs/agd-rules.md``), and a tied embedding
is calibrated for unit-scale logits when an example says the head's input scale.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._resolve import Resolution
from .kinds import INIT_ORIGINS
from .rules import Kind, rule_of

__all__ = ["init_weights", "warn_uncalibrated"]


@torch.no_grad()
def init_weights(model: nn.Module, *, kinds: Mapping[Any, str | Kind] | None = None,
                 generator: torch.Generator | None = None, example: Any = None) -> nn.Module:
    """Initialise every trainable parameter of ``model`` by its kind's rule, in place.

    The same initialisation as ``AGD(model, example=example).init_weights()``, without an
    optimiser: call it where the model is built (e.g. a LightningModule's ``__init__``), so
    that a framework that restores weights after building the optimiser overwrites it, never
    the reverse. Kinds read from the forward and ``generic`` tensors keep the model's values.
    """
    resolution = Resolution(model, kinds, example=example)
    for info in resolution.infos:
        if info.origin not in INIT_ORIGINS:
            continue
        rule = rule_of(info.kind)
        rule.check(info.name, info.param.shape, info.kind)
        rule.init_(info.param, info.kind, generator, info.padding_idx)
    warn_uncalibrated(resolution.calibrate(resolution.infos))
    return model


def warn_uncalibrated(names: list[str]) -> None:
    """One warning naming the tied tables ``init_weights`` could not calibrate (no example)."""
    if names:
        warnings.warn(f"init_weights: {', '.join(names)} is an embedding tied to the output "
                      "head; at the embedding rule's scale (rows of RMS 1) the logits start "
                      "about sqrt(d) too large. Pass an input, AGD(model, example=batch), so that "
                      "init_weights reads the head's input and starts the logits at unit scale "
                      "(docs/agd-rules.md §3)", stacklevel=4)
