"""Progress: a tqdm bar per epoch on a terminal, one plain line per epoch otherwise.

The loop hands over numbers it has already synced (every ``log_every`` steps), so progress never
forces a device synchronisation itself. On a terminal (``stream.isatty()``, the stream being
``sys.stderr`` by default) each epoch gets a tqdm bar with loss, accuracy, the stepper's
scalars and the time the whole run has left. Anywhere else (a log file, a pipe, a batch job) a
redrawn bar would fill the file with carriage returns, so each epoch (or
``--steps``/``--eval-every`` segment) ends with one line::

    epoch 3/30: 469/469 steps in 4.1 s, loss 0.1234, acc 0.9512, η 0.01876; 1 min 52 s left

(a segment that starts mid-epoch, under ``--eval-every`` or a resume, says ``steps 201-400
of 1307 in 29.6 s``).

AGD's step size is shown as ``η`` (the metrics files keep the key ``eta``), so that it is not
read as a time. The time left is the run's remaining steps times the wall time per step so far
in this process (evaluations and checkpoints included); an ``auto`` run
(:mod:`~hyperfree.train.length`) shows it up to its cap, as ``≤ …``. Disabled (non-zero ranks,
tests), or on a terminal without tqdm installed (the ``train`` extra), every method is a no-op.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

__all__ = ["Progress", "format_duration", "display_name"]

# what the stepper logs -> what a person reads
_DISPLAY = {"eta": "η"}


def display_name(key: str) -> str:
    """The name a logged scalar is shown under (``eta`` -> ``η``)."""
    return _DISPLAY.get(key, key)


def format_duration(seconds: float) -> str:
    """``4.1 s``, ``1 min 52 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """``start(epoch, total, initial, step=...)``, ``update(n, values)``, ``close(values)``.

    ``epochs`` is the number of epochs the run takes (at most, if ``auto``); ``total_steps``
    the steps it takes (at most), for the time left; ``clock`` returns seconds (tests pass
    their own).
    """

    def __init__(self, *, enabled: bool, epochs: int, total_steps: int = 0, auto: bool = False,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._epochs, self._total, self._auto = epochs, total_steps, auto
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._bar: Any = None
        self._tqdm: Any = None
        self._plain = False
        self._line: dict[str, Any] | None = None  # plain mode: the epoch's progress so far
        self._t0: float | None = None  # when this process took its first step
        self._step0 = self._step = 0  # the global step then, and now
        self._epoch_t0 = 0.0
        if enabled and _isatty(self._stream):
            try:
                from tqdm.auto import tqdm
            except ImportError:  # optional extra: run without a bar
                tqdm = None
            self._tqdm = tqdm
        elif enabled:
            self._plain = True

    @property
    def active(self) -> bool:
        """Whether progress is shown (callers skip computing values otherwise)."""
        return self._tqdm is not None or self._plain

    def _desc(self, epoch: int) -> str:
        of = f"≤{self._epochs} (auto)" if self._auto else f"{self._epochs}"
        return f"epoch {epoch + 1}/{of}"

    def time_left(self) -> str | None:
        """The run's remaining wall time as text (``≤ …`` for auto), ``None`` before a step."""
        done = self._step - self._step0
        if self._t0 is None or done <= 0 or self._total <= 0:
            return None
        left = max(self._total - self._step, 0) * (self._clock() - self._t0) / done
        return ("≤ " if self._auto else "") + format_duration(left)

    def start(self, epoch: int, total: int, initial: int = 0, *, step: int = 0) -> None:
        """Open the bar for ``epoch`` (0-based) with ``total`` steps, ``initial`` already done;
        ``step`` is the run's global step."""
        if not self.active:
            return
        now = self._clock()
        if self._t0 is None:
            self._t0, self._step0 = now, step
        self._step, self._epoch_t0 = step, now
        if self._plain:
            self._line = {"epoch": epoch, "total": total, "done": initial, "initial": initial,
                          "values": {}}
        elif self._tqdm is not None:
            self._bar = self._tqdm(total=total, initial=initial, dynamic_ncols=True, leave=True,
                                   desc=self._desc(epoch), unit="step", file=self._stream)

    def update(self, n: int, values: dict[str, float] | None = None) -> None:
        """Advance by ``n`` steps; show ``values`` (already on the host) if given."""
        self._step += n
        if self._line is not None:
            self._line["done"] += n
            self._line["values"].update(values or {})
        if self._bar is None:
            return
        if values:
            self._bar.set_postfix(self._postfix(values), refresh=False)
        self._bar.update(n)

    def _postfix(self, values: dict[str, float]) -> dict[str, str]:
        shown = {display_name(k): _fmt(v) for k, v in values.items()}
        left = self.time_left()
        if left is not None:
            shown["run left"] = left
        return shown

    def close(self, values: dict[str, float] | None = None) -> None:
        """Show the epoch's final ``values`` and close the bar (plain: write the line)."""
        if self._line is not None:
            line, self._line = self._line, None
            shown = {**line["values"], **(values or {})}
            took = format_duration(self._clock() - self._epoch_t0)
            steps = f"{line['done']}/{line['total']} steps" if not line["initial"] else \
                f"steps {line['initial'] + 1}-{line['done']} of {line['total']}"
            text = ", ".join([f"{steps} in {took}",
                              *(f"{display_name(k)} {_fmt(v)}" for k, v in shown.items())])
            left = self.time_left()
            tail = f"; {left} left" if left is not None else ""
            print(f"{self._desc(line['epoch'])}: {text}{tail}", file=self._stream, flush=True)
        if self._bar is None:
            return
        if values:
            self._bar.set_postfix(self._postfix(values), refresh=False)
        self._bar.close()
        self._bar = None


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def _fmt(value: float) -> str:
    return f"{value:.4g}"
