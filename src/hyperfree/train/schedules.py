r"""Learning-rate schedules for the learning-rate optimisers: ``--schedule`` and ``--warmup-steps``.

For a run of ``T`` optimiser steps (``epochs × batches per epoch``, or ``--steps``), ``W`` warmup
steps and the step index ``t = 0, 1, …, T − 1``, the lr of step ``t`` is ``lr · m(t)`` with

.. code-block:: text

    warmup    m(t) = (t + 1) / W                       for t < W   (linear from 0; step W−1 at lr)
    constant  m(t) = 1                                  for t ≥ W
    cosine    m(t) = ½ (1 + cos(π (t − W) / (T − W)))   for t ≥ W   (from 1 down towards 0)
    linear    m(t) = 1 − (t − W) / (T − W)              for t ≥ W   (from 1 down towards 0)

so the decay reaches 0 at step ``T``, just after the run's last step, and every step moves.
:func:`lr_multiplier` is that formula; :class:`ScheduledStepper` applies it to every param group
of a stepper's optimisers before each step, logs the step's lr, and keeps the step counter (and
the schedule it belongs to) in its ``state_dict`` so a resumed run continues exactly. A decaying
schedule is tied to its run length: resuming it with another length is refused.

AGD has no learning rate to schedule (its ``lr`` is a plain multiplier, 1 = AGD as derived);
the registry refuses ``--schedule``/``--warmup-steps`` for it, the peers and the towers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from .steppers import Stepper, describe_stepper, optimizers_of

__all__ = ["SCHEDULES", "Schedule", "lr_multiplier", "ScheduledStepper", "schedule_stepper"]

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear")


def lr_multiplier(schedule: str, step: int, *, warmup_steps: int, total_steps: int) -> float:
    """``m(step)`` of the module docstring (``step`` counts from 0)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """``name`` (one of :data:`SCHEDULES`) with ``warmup_steps`` over a run of ``total_steps``."""

    name: str
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose one of "
                             f"{', '.join(SCHEDULES)}")
        for field in ("warmup_steps", "total_steps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"schedule {field} must be an integer >= 0, got {value!r}")
        if self.total_steps < 1 or self.warmup_steps >= self.total_steps:
            raise ValueError(f"--warmup-steps {self.warmup_steps} must be below the run's "
                             f"{self.total_steps} steps")

    def multiplier(self, step: int) -> float:
        """The lr multiplier of step ``step`` (0-based)."""
        return lr_multiplier(self.name, step, warmup_steps=self.warmup_steps,
                             total_steps=self.total_steps)


class ScheduledStepper:
    """A stepper whose optimisers' lr follows a :class:`Schedule`; logs ``lr`` of every step.

    The base lr of every param group is read once, at construction; before step ``t`` each
    group's lr is set to ``base · m(t)`` (so a restored optimiser state's lr is overwritten by
    the schedule's, which is the same value). The logged ``lr`` is group 0's, a 0-dim tensor made on
    the parameters' device without a host sync.
    """

    def __init__(self, inner: Stepper, schedule: Schedule) -> None:
        self.inner, self.schedule = inner, schedule
        self.module = inner.module
        groups = self._groups()
        if not groups:
            raise ValueError(f"{type(inner).__name__} has no optimiser param groups with a "
                             "learning rate to schedule")
        self._base = [float(g["lr"]) for g in groups]
        self._device = groups[0]["params"][0].device
        self.steps = 0

    def _groups(self) -> list[dict[str, Any]]:
        # read afresh every time: Optimizer.load_state_dict replaces the group dicts
        return [g for opt in optimizers_of(self.inner) for g in opt.param_groups]

    def init_weights(self) -> None:
        self.inner.init_weights()

    @property
    def averaged(self) -> bool:
        return bool(getattr(self.inner, "averaged", False))

    def train(self) -> None:
        self.inner.train()

    def eval(self) -> None:
        self.inner.eval()

    def step(self, loss: Tensor) -> dict[str, Tensor]:
        m = self.schedule.multiplier(self.steps)
        for group, base in zip(self._groups(), self._base):
            group["lr"] = base * m
        logs = self.inner.step(loss)
        self.steps += 1
        return {**logs, "lr": torch.full((), self._base[0] * m, device=self._device)}

    def describe(self) -> dict[str, Any]:
        return {**describe_stepper(self.inner), "schedule": dataclasses.asdict(self.schedule)}

    def state_dict(self) -> dict[str, Any]:
        return {"stepper": self.inner.state_dict(),
                "schedule": {"step": self.steps, **dataclasses.asdict(self.schedule)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "schedule" not in state:  # saved before schedules existed: a constant lr
            if self.schedule != Schedule("constant", 0, self.schedule.total_steps):
                raise ValueError("this checkpoint has no schedule state; it can only resume a "
                                 "constant schedule without warmup")
            self.inner.load_state_dict(state)
            return
        saved = dict(state["schedule"])
        step = int(saved.pop("step"))
        if saved["name"] != "constant" and saved != dataclasses.asdict(self.schedule):
            raise ValueError(f"the run's {saved['name']} schedule decays to 0 at step "
                             f"{saved['total_steps']}; it cannot continue over "
                             f"{self.schedule.total_steps} steps (start a new run with --out)")
        self.inner.load_state_dict(state["stepper"])
        self.steps = step


def schedule_stepper(stepper: Stepper, schedule: str | None, warmup_steps: int | None,
                     total_steps: int) -> Stepper:
    """``stepper`` under ``schedule`` over ``total_steps`` (as is when ``schedule`` is None)."""
    if schedule is None:
        if warmup_steps:
            raise ValueError(f"--warmup-steps {warmup_steps} needs a --schedule")
        return stepper
    return ScheduledStepper(stepper, Schedule(schedule, int(warmup_steps or 0), total_steps))
