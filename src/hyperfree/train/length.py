"""How long a run is: a fixed number of epochs or steps, or ``auto`` (stop when the training
loss has stopped falling).

``epochs=N`` trains N whole epochs, ``steps=N`` N optimiser steps. ``epochs="auto"`` and
``steps="auto"`` stop by themselves, by the rule below, and at the latest after
:data:`AUTO_MAX_EPOCHS` epochs. A run given neither gets ``epochs="auto"`` if its optimiser
needs no schedule (AGD: it reports its own step size η), else :data:`DEFAULT_EPOCHS` epochs
(:func:`default_length`).

The auto rule (:func:`progress_faded`). What an epoch still buys is the fall of the training
loss over it. Per record ``i`` (epoch ``e_i``, mean training loss ``ℓ_i`` over its segment), the
rate ``r_i = (ℓ_j − ℓ_i)/(e_i − e_j)`` per epoch over the last epoch (``j`` the latest record
at least one epoch before; records within the first epoch have none). The run stops at the
first record (epoch end for ``epochs="auto"``, every ``eval_every`` steps for ``steps="auto"``)
where

    r_i  <  FADE_FRACTION · max(r over the records so far),        FADE_FRACTION = 1/20,

i.e. when 20 further epochs would lower the loss less than the most productive epoch did. The
loss, not AGD's η, is read because the default preset's η plateaus: it anneals through the
average of its weights (``docs/agd-stability.md`` §8). The README gives the default run's stop.
The rule reads only the metrics records, so a resumed run makes the same decision, and a run
that has stopped stays stopped. A learning-rate schedule needs its horizon, so ``auto`` is
refused with one.

A step-counted run records every ``eval_every`` steps; when that is not given it is
:func:`default_eval_every`: about :data:`RECORDS_PER_RUN` records over ``steps=N``, and
:data:`RECORDS_PER_EPOCH` per epoch for ``steps="auto"``, so that its figure has points.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["AUTO", "DEFAULT_EPOCHS", "AUTO_MAX_EPOCHS", "FADE_FRACTION", "RECORDS_PER_RUN",
           "RECORDS_PER_EPOCH", "check_length", "default_length", "default_eval_every",
           "progress_faded", "RunLength"]

AUTO = "auto"
# The fixed length of a run whose optimiser reports no step size (Adam, SGD, towers, peers).
DEFAULT_EPOCHS = 30
# An auto run stops here at the latest, even if its loss never stops falling.
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


def loss_rates(records: Sequence[dict[str, Any]], key: str = "train_loss"
               ) -> list[float | None]:
    """Per record, the fall of ``key`` per epoch over the last epoch up to it (None within the
    first epoch, or where a value is not finite)."""
    out: list[float | None] = []
    for i, rec in enumerate(records):
        j = next((j for j in range(i - 1, -1, -1)
                  if records[j]["epoch"] <= rec["epoch"] - 1), None)
        a = records[j].get(key) if j is not None else None
        b = rec.get(key)
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b))
        out.append((a - b) / (rec["epoch"] - records[j]["epoch"]) if ok else None)
    return out


def progress_faded(records: Sequence[dict[str, Any]], *, key: str = "train_loss",
                   fraction: float = FADE_FRACTION) -> bool:
    """Whether the last record's loss rate is below ``fraction`` of the largest rate so far."""
    rates = loss_rates(records, key)
    defined = [r for r in rates if r is not None]
    if len(defined) < 2 or rates[-1] is None:
        return False
    peak = max(defined)
    return peak > 0 and rates[-1] < fraction * peak


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
        """Done: all steps taken, or (auto) the loss has stopped falling at a record (at an
        epoch end for ``epochs="auto"``)."""
        if global_step >= self.max_steps:
            return True
        if not self.auto or not records or records[-1]["step"] != global_step:
            return False
        if self.epochs == AUTO and batch != 0:
            return False
        return progress_faded(records)

    def segment_end(self, batch: int, global_step: int) -> int:
        """The batch (exclusive) of this epoch where training stops for the next record."""
        left = self.max_steps - global_step
        if self.eval_every is not None:
            left = min(left, self.eval_every - global_step % self.eval_every)
        return int(min(self.epoch_len, batch + left))
