"""Callbacks: the two hooks :func:`hyperfree.train.train` calls, and a Ctrl-C helper.

A callback subclasses :class:`Callback` and overrides what it needs. ``on_step_end`` runs after
every optimisation step, at a consistent point (weights updated, metrics accumulated): raising
``KeyboardInterrupt`` there makes the loop save a checkpoint that resumes exactly.
``on_epoch_end`` receives each metrics record (already on the host): one per epoch end, and
also the mid-epoch ones of ``steps`` / ``eval_every`` runs (their ``epoch`` is fractional).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

__all__ = ["StepInfo", "Callback", "StopFlag"]


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """Where the loop is: 0-based ``epoch``, ``batch`` index in it, ``global_step`` (1-based)."""

    epoch: int
    batch: int
    global_step: int
    loss: Tensor
    logs: dict[str, Tensor]


class Callback:
    """Base class with no-op hooks."""

    def on_step_end(self, info: StepInfo) -> None:
        """After each step (``info.loss`` is a device tensor: do not sync needlessly)."""

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        """After each epoch's evaluation; ``record`` is the metrics.jsonl line."""


class StopFlag(Callback):
    """Raise ``KeyboardInterrupt`` at the next step boundary once :meth:`request` was called.

    The CLI points its SIGINT and SIGTERM handlers at :meth:`request`, so Ctrl-C stops
    training at a step boundary, where the loop can checkpoint a consistent state (it sets
    ``signum`` to say which signal it was). Before the first step (data loading, model
    building) there is nothing to save, so :meth:`request` raises at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self.training = False
        self.signum: int | None = None

    def request(self, *_: Any) -> None:
        if not self.training:
            raise KeyboardInterrupt
        self.requested = True

    def on_step_end(self, info: StepInfo) -> None:
        self.training = True
        if self.requested:
            raise KeyboardInterrupt
