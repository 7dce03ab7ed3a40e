"""How a run ends: its :class:`History`, or :class:`TrainingInterrupted` or
:class:`TrainingDiverged`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from .steppers import Stepper

__all__ = ["History", "TrainingInterrupted", "TrainingDiverged"]


@dataclasses.dataclass
class History:
    """What a run produced: per-epoch ``records``, the ``run_dir`` (or None), model, stepper."""

    records: list[dict[str, Any]]
    run_dir: Path | None
    model: nn.Module
    stepper: Stepper


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by ``KeyboardInterrupt``; ``checkpoint`` is where it was saved (or None)."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint: {checkpoint}")
        self.checkpoint = checkpoint


class TrainingDiverged(RuntimeError):
    """A non-finite training loss or weight stopped the run; ``checkpoint`` is the last good
    one kept on disk (``None`` if there is none) and ``epoch`` the 0-based epoch it happened in."""

    def __init__(self, message: str, checkpoint: Path | None, epoch: int) -> None:
        super().__init__(message)
        self.checkpoint, self.epoch = checkpoint, epoch
