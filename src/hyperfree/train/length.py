"""How long a run is: a fixed number of epochs or steps, or ``auto`` (stop when η has faded).

``epochs=N`` trains N whole epochs, ``steps=N`` N optimiser steps. ``epochs="auto"`` and
``steps="auto"`` stop by themselves, by the rule below, and at the latest after
:data:`AUTO_MAX_EPOCHS` epochs. A run given neither gets ``epochs="auto"`` if its optimiser
reports a step size η (AGD), else :data:`DEFAULT_EPOCHS` epochs (:func:`default_length`).

The auto rule (:func:`eta_faded`). AGD's step moves every layer by ``gain·η/L`` of its own
scale, in its own norm (Bernstein et al. 2023, Algorithm 1), and η is computed from the
gradient: it is large while the network still learns and falls towards 0 once the training
loss is fitted (the ``spectral-fresh`` preset, the default for networks without normalisation,
anneals η this way; Figure 4 of the paper). So the mean of η over the last epoch of steps,
η̄, measures how far an epoch still moves the weights relative to the epoch that moved them
most. The run stops at the first record (epoch end for ``epochs="auto"``, every
``eval_every`` steps for ``steps="auto"``) where

    η̄  <  FADE_FRACTION · max(η̄ over the records so far),        FADE_FRACTION = 1/20,

i.e. when 20 further epochs would move the weights less than the most active epoch did. On
the default run (FCN 8×256, Fashion-MNIST) the rule stops at epoch 11 of 30 with the same test
accuracy, 89.6% (README). The rule reads only the metrics records, so a resumed run makes the
same decision, and a run that has stopped stays stopped. It needs the η that AGD reports: for
an optimiser that reports none, ``auto`` is refused (give a number).

A step-counted run records every ``eval_every`` steps; when that is not given it is
:func:`default_eval_every`: about :data:`RECORDS_PER_RUN` records over ``steps=N``, and
:data:`RECORDS_PER_EPOCH` per epoch for ``steps="auto"``, so that its figure has points.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["AUTO", "DEFAULT_EPOCHS", "AUTO_MAX_EPOCHS", "FADE_FRACTION", "RECORDS_PER_RUN",
           "RECORDS_PER_EPOCH", "check_length", "default_length", "default_eval_every",
           "eta_faded", "RunLength"]

AUTO = "auto"
# The fixed length of a run whose optimiser reports no step size (Adam, SGD, towers, peers).
DEFAULT_EPOCHS = 30
# An auto run stops here at the latest, even if η never fades (e.g. a momentum preset).
AUTO_MAX_EPOCHS = 30
FADE_FRACTION = 1 / 20
RECORDS_PER_RUN = 10  # each record evaluates the whole test split: a few seconds for the GPT
RECORDS_PER_EPOCH = 4


def check_length(name: str, value: object) -> None:
    """ValueError naming ``value`` unless it is ``None``, ``"auto"`` or an integer >= 1."""
    if value is None or value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 or 'auto', got {value!r}")


def default_length(reports_eta: bool) -> int | str:
    """The ``epochs`` of a run given no length: ``"auto"`` if the optimiser reports η."""
    return AUTO if reports_eta else DEFAULT_EPOCHS


def default_eval_every(steps: int | str, epoch_len: int) -> int:
    """Steps between records of a step-counted run that did not give ``eval_every``."""
    if steps == AUTO:
        return max(1, math.ceil(epoch_len / RECORDS_PER_EPOCH))
    return max(1, math.ceil(int(steps) / RECORDS_PER_RUN))


def _running_eta(records: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    """Per record, the step-weighted mean of ``<key>_mean`` over the records of the last epoch
    up to it (its own included); ``None`` where no record in that window has a finite value."""
    out: list[float | None] = []
    for i, rec in enumerate(records):
        total = weight = 0.0
        for j in range(i, -1, -1):
            r = records[j]
            if j < i and r["epoch"] <= rec["epoch"] - 1:
                break
            steps = r["step"] - (records[j - 1]["step"] if j > 0 else 0)
            value = r.get(f"{key}_mean")
            if isinstance(value, (int, float)) and math.isfinite(value) and steps > 0:
                total, weight = total + value * steps, weight + steps
        out.append(total / weight if weight > 0 else None)
    return out


def eta_faded(records: Sequence[dict[str, Any]], *, key: str = "eta",
              fraction: float = FADE_FRACTION) -> bool:
    """Whether the last record's running η̄ is below ``fraction`` of the largest η̄ so far."""
    running = _running_eta(records, key)
    if len(running) < 2 or running[-1] is None:
        return False
    peak = max(v for v in running if v is not None)
    return peak > 0 and running[-1] < fraction * peak


class RunLength:
    """A run's length in use: ``finished``, where the next record falls, and the total steps.

    ``epochs``/``steps`` come from a resolved config (one of them set); ``epoch_len`` is the
    number of batches per epoch; ``eval_every`` the steps between records (``None``: epoch ends
    only, for an epoch-counted run).
    """

    def __init__(self, epochs: int | str | None, steps: int | str | None, epoch_len: int,
                 eval_every: int | None) -> None:
        self.epochs, self.steps, self.epoch_len = epochs, steps, epoch_len
        self.auto = AUTO in (epochs, steps)
        if steps is not None and eval_every is None:
            eval_every = default_eval_every(steps, epoch_len)
        self.eval_every = eval_every
        if steps is not None:
            self.max_steps = AUTO_MAX_EPOCHS * epoch_len if steps == AUTO else int(steps)
        else:
            self.max_steps = (AUTO_MAX_EPOCHS if epochs == AUTO else int(epochs or 0)) * epoch_len

    @property
    def max_epochs(self) -> int:
        """Whole epochs the run takes at most (the last one may be partial)."""
        return max(1, math.ceil(self.max_steps / max(self.epoch_len, 1)))

    def finished(self, global_step: int, batch: int, records: Sequence[dict[str, Any]]) -> bool:
        """Done: all steps taken, or (auto) η has faded at a record (at an epoch end for
        ``epochs="auto"``)."""
        if global_step >= self.max_steps:
            return True
        if not self.auto or not records or records[-1]["step"] != global_step:
            return False
        if self.epochs == AUTO and batch != 0:
            return False
        return eta_faded(records)

    def segment_end(self, batch: int, global_step: int) -> int:
        """The batch (exclusive) of this epoch where training stops for the next record."""
        left = self.max_steps - global_step
        if self.eval_every is not None:
            left = min(left, self.eval_every - global_step % self.eval_every)
        return int(min(self.epoch_len, batch + left))
