"""Progress: a tqdm bar per epoch on a terminal, one plain line per epoch otherwise.

The loop hands over numbers it has already synced (every ``log_every`` steps), so progress never
forces a device synchronisation itself. On a terminal (``stream.isatty()``, the stream being
``sys.stderr`` by default) each epoch gets a tqdm bar with loss, accuracy and the stepper's
scalars. Anywhere else (a log file, a pipe, a batch job) a redrawn bar would fill the file with
carriage returns, so each epoch (or ``--steps``/``--eval-every`` segment) ends with one line:
``epoch 3/30: 469/469 steps, loss 0.1234, acc 0.9512, eta 0.1876``. Disabled (non-zero ranks,
tests), or on a terminal without tqdm installed (the ``train`` extra), every method is a no-op.
"""
from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """``start(epoch, total, initial)``, ``update(n, values)``, ``close(values)``."""

    def __init__(self, *, enabled: bool, epochs: int, stream: TextIO | None = None) -> None:
        self._epochs = epochs
        self._stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._tqdm: Any = None
        self._plain = False
        self._line: dict[str, Any] | None = None  # plain mode: the epoch's progress so far
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

    def start(self, epoch: int, total: int, initial: int = 0) -> None:
        """Open the bar for ``epoch`` (0-based) with ``total`` steps, ``initial`` already done."""
        if self._plain:
            self._line = {"epoch": epoch, "total": total, "done": initial, "values": {}}
        elif self._tqdm is not None:
            self._bar = self._tqdm(total=total, initial=initial, dynamic_ncols=True, leave=True,
                                   desc=f"epoch {epoch + 1}/{self._epochs}", unit="step",
                                   file=self._stream)

    def update(self, n: int, values: dict[str, float] | None = None) -> None:
        """Advance by ``n`` steps; show ``values`` (already on the host) if given."""
        if self._line is not None:
            self._line["done"] += n
            self._line["values"].update(values or {})
        if self._bar is None:
            return
        if values:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)
        self._bar.update(n)

    def close(self, values: dict[str, float] | None = None) -> None:
        """Show the epoch's final ``values`` and close the bar (plain: write the line)."""
        if self._line is not None:
            line, self._line = self._line, None
            shown = {**line["values"], **(values or {})}
            text = ", ".join([f"{line['done']}/{line['total']} steps",
                              *(f"{k} {_fmt(v)}" for k, v in shown.items())])
            print(f"epoch {line['epoch'] + 1}/{self._epochs}: {text}", file=self._stream,
                  flush=True)
        if self._bar is None:
            return
        if values:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)
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
