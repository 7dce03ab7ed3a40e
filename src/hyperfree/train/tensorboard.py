"""``--tensorboard``: every logged scalar, per step and per record, in TensorBoard event files.

:class:`TensorBoardLog` is a :class:`~hyperfree.train.callbacks.Callback` that writes, with
TensorBoard's own writer (``torch.utils.tensorboard.SummaryWriter``; the ``tensorboard`` package,
the ``tensorboard`` extra), into ``<run dir>/tensorboard/``:

* per step, at the optimiser step's global step: ``step/loss`` (the batch's training loss) and
  every scalar the stepper logs (``step/eta`` for AGD, ``step/lr`` for a scheduled optimiser,
  ``step/lr``, ``step/beta1``… for towers);
* per record (each epoch end, and each ``--steps``/``--eval-every`` record), at the record's
  global step: every number of the ``metrics.jsonl`` line as ``epoch/<key>``.

The per-step values are device tensors: they are buffered and written in one transfer at the
loop's existing host synchronisations (every ``log_every`` batches and at each record), so
logging adds no host sync per step. A resumed run hides the events of steps after its
checkpoint (TensorBoard's ``purge_step``), so steps redone after a crash are not doubled.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from .callbacks import Callback, StepInfo

__all__ = ["TENSORBOARD_DIR", "TensorBoardLog", "summary_writer_class", "tensorboard_callbacks"]

TENSORBOARD_DIR = "tensorboard"


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; a one-line ValueError if tensorboard is
    missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install "
                         "'hyperfree[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter


class TensorBoardLog(Callback):
    """Write per-step and per-record scalars to ``run_dir/tensorboard`` (see module docstring).

    ``log_every`` is the loop's sync interval in batches; use as a context manager (or call
    :meth:`close`) so that the last buffered steps are written.
    """

    def __init__(self, run_dir: str | Path, log_every: int) -> None:
        self._writer_class = summary_writer_class()  # fail before any training
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.log_every = log_every
        self._writer: Any = None
        self._steps: list[int] = []
        self._names: list[list[str]] = []
        self._values: list[Tensor] = []
        self.flushes = 0  # writes of buffered steps (each one device->host transfer)

    def _open(self, first_step: int) -> Any:
        if self._writer is None:  # events at or after first_step from an earlier life: hidden
            self._writer = self._writer_class(str(self.log_dir), purge_step=first_step)
        return self._writer

    def on_step_end(self, info: StepInfo) -> None:
        self._open(info.global_step)
        names = ["loss", *info.logs]
        values = [info.loss, *info.logs.values()]
        self._steps.append(info.global_step)
        self._names.append(names)
        self._values.append(torch.stack([v.detach().reshape(()).to(torch.float32)
                                         for v in values]))
        if (info.batch + 1) % self.log_every == 0:  # the loop has just synced here
            self.flush_steps()

    def flush_steps(self) -> None:
        """Write the buffered steps (one device-to-host transfer)."""
        if not self._steps:
            return
        rows = torch.cat(self._values).tolist()
        i = 0
        for step, names in zip(self._steps, self._names):
            for name in names:
                self._writer.add_scalar(f"step/{name}", rows[i], global_step=step)
                i += 1
        self._steps, self._names, self._values = [], [], []
        self.flushes += 1

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        self.flush_steps()
        writer = self._open(int(record["step"]))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"epoch/{key}", value if math.isfinite(value) else
                                  float("nan"), global_step=int(record["step"]))
        writer.flush()

    def close(self) -> None:
        """Write what is buffered and close the event file."""
        if self._writer is not None:
            self.flush_steps()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def tensorboard_callbacks(enabled: bool, run_dir: Path | None, log_every: int
                          ) -> Iterator[list[Callback]]:
    """``[TensorBoardLog]`` while the block runs (closed after it), or ``[]`` if not enabled."""
    if not enabled or run_dir is None:
        yield []
        return
    with TensorBoardLog(run_dir, log_every) as log:
        yield [log]
