"""What a tower says when a step cannot be taken: one warning class, one error class, messages.

A *skip* (non-finite loss or gradient, or a loss-scaling overflow) changes nothing and is
counted in ``HyperModule.skipped_steps``; the warning text never changes, so Python's default
filter shows it once per call site however many steps are skipped. A tower that cannot go on
raises :class:`TowerDivergedError`, whose message names the level, the hyperparameter, its value
and what to change:

* a hyper-update made a hyperparameter non-finite (that step is not applied);
* the weights are no longer finite (the last update diverged: skipping cannot help);
* ``max_consecutive_skips`` steps in a row were skipped.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .optimizers import HyperOptimizer

__all__ = ["NonFiniteStepWarning", "TowerDivergedError", "SKIP_MESSAGE", "raw_limits",
           "entry_names", "hyperparameter_message", "weights_message", "stuck_message"]


class NonFiniteStepWarning(RuntimeWarning):
    """A step was skipped because the loss or a (hyper)gradient was not finite."""


class TowerDivergedError(FloatingPointError):
    """The tower cannot continue: a hyperparameter or the weights stopped being finite, or too
    many steps in a row were skipped. The message says which level and what to change."""


SKIP_MESSAGE = ("HyperModule skipped a step: the loss or a gradient was not finite, so weights, "
                "hyperparameters and optimiser state are unchanged (HyperModule.skipped_steps "
                "counts the skips; max_consecutive_skips in a row raise TowerDivergedError)")


def raw_limits(levels: Sequence[HyperOptimizer], weight_dtype: torch.dtype) -> list[Tensor]:
    """Per tuned level, the largest ``|raw|`` whose natural value is finite where it is used:
    in the weights' dtype at level 0, in the raw dtype above. ``lr`` is the raw value, ``sq``
    its square (so the root of the limit), ``unit`` is ``(tanh+1)/2`` (finite for any finite
    raw). The step compares the new raw values with these (``_gradients.finite_flags``)."""
    out = []
    for j, level in enumerate(levels[:-1]):
        top = torch.finfo(weight_dtype if j == 0 else level.raw.dtype).max
        bound = {"lr": top, "sq": math.sqrt(top), "unit": math.inf}
        kinds = level._kinds(level.raw.numel())
        out.append(torch.tensor([bound[kind] for _, kind in kinds], dtype=level.raw.dtype,
                                device=level.raw.device))
    return out


def _key(name: str, level: int) -> str:
    return name if level == 0 else f"{name}@{level}"


def entry_names(level: HyperOptimizer, k: int) -> list[str]:
    """Names of the entries of ``level``'s natural hyperparameters, flattened in order
    (``lr``, ``beta1``, …; ``lr[i]`` for one step size per tensor), suffixed ``@k``."""
    out = []
    for name, value in level.natural(level.raw.detach()).items():
        n = value.numel()
        out += [_key(name, k)] if n == 1 else [_key(f"{name}[{i}]", k) for i in range(n)]
    return out


def _values(levels: Sequence[HyperOptimizer]) -> str:
    return ", ".join(f"{_key(name, k)}={value:.4g}" for k, level in enumerate(levels)
                     for name, value in level.values().items())


def _smaller(level: HyperOptimizer) -> str:
    """Stack text for ``level`` with a ten times smaller initial step size."""
    lr = getattr(level, "lr", None)
    return level.own_repr() if lr is None else f"{level.name}(lr={lr / 10:g})"


def hyperparameter_message(levels: Sequence[HyperOptimizer], finite: Sequence[bool]) -> str:
    """``finite``: one flag per raw entry of every tuned level (bottom-up, in the order of
    :func:`entry_names`)."""
    names = [(j, name) for j, level in enumerate(levels[:-1]) for name in entry_names(level, j)]
    j, name = next(entry for entry, ok in zip(names, finite) if not ok)
    above = levels[j + 1]
    bad = "non-finite or beyond the weights' dtype" if j == 0 else "non-finite"
    return (f"HyperModule: the hyper-update of level {j + 1} ({above.own_repr()}) made {name} "
            f"(a hyperparameter of level {j}, {levels[j].own_repr()}) {bad}; the step was not "
            f"applied. Level {j + 1}'s step size is too large for this problem: start it "
            f"smaller, e.g. {_smaller(above)}, or tune level {j} with an adaptive optimiser "
            f"(adam). Hyperparameters now: {_values(levels)}")


def weights_message(levels: Sequence[HyperOptimizer]) -> str:
    """The weights are not finite: the last update (level 0's step) diverged."""
    base = (f"HyperModule: the weights are no longer finite, so the last update diverged and "
            f"skipping steps cannot help (hyperparameters: {_values(levels)}). ")
    if len(levels) == 1:
        return base + (f"The fixed step size is too large: restart from your last checkpoint "
                       f"with a smaller one, e.g. {_smaller(levels[0])}")
    return base + (f"Level 1 ({levels[1].own_repr()}) tunes level 0's step size: restart from "
                   f"your last checkpoint with a smaller step size at level 1, e.g. "
                   f"{_smaller(levels[1])}, or a smaller initial lr at level 0")


def stuck_message(levels: Sequence[HyperOptimizer], in_a_row: int, total: int,
                  scaled: bool) -> str:
    scaling = (" With loss scaling, the scale has been lowered at every skip, so the overflow "
               "is not the scale's." if scaled else "")
    text = (f"HyperModule: {in_a_row} steps in a row were skipped ({total} in all) because the "
            f"loss or a gradient was not finite, although the weights are finite "
            f"(hyperparameters: {_values(levels)}). Check the data and the loss.{scaling} ")
    start, now = getattr(levels[0], "lr", None), levels[0].values().get("lr")
    if len(levels) > 1 and start is not None and now is not None:
        text += (f"If the loss overflows because level 0's lr has grown (it started at "
                 f"{start:g}, it is {now:.4g} now), level 1 ({levels[1].own_repr()}) tunes it "
                 f"too fast: use a smaller step size there, e.g. {_smaller(levels[1])}. ")
    return text + ("Pass a larger max_consecutive_skips (or None) to tolerate longer runs of "
                   "bad batches")
