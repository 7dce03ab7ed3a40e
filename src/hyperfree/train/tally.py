"""Repeated warnings during a run, counted instead of printed hundreds of times.

A tower with a too-large step size warns at every skipped step (``NonFiniteStepWarning``), and
so does AGD (a ``RuntimeWarning`` per skipped step); each message differs (it names the step),
so Python's own once-per-location filter lets every one through. Inside a
:class:`WarningTally`, the first warning from each place in the code (category, file, line) is
shown as usual; later ones from that place are only counted, and :meth:`WarningTally.flush`
(called at every epoch's end and at the run's end) shows one line per place:
``... and N more like this``. Filters are left alone: an ignored warning stays ignored, one
turned into an error still raises.
"""
from __future__ import annotations

import warnings
from types import TracebackType
from typing import Any, TextIO

__all__ = ["WarningTally"]

_Key = tuple[type, str, int]


class WarningTally:
    """Context manager: show each place's first warning, count the rest, summarise on flush."""

    def __init__(self) -> None:
        self._seen: set[_Key] = set()
        self._pending: dict[_Key, tuple[int, str]] = {}  # key -> (count, first message)
        self._first: dict[_Key, str] = {}
        self._previous: Any = None

    def __enter__(self) -> WarningTally:
        self._previous = warnings.showwarning
        warnings.showwarning = self._show
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.flush("in this run")
        warnings.showwarning = self._previous

    def _show(self, message: Warning | str, category: type[Warning], filename: str,
              lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
        key = (category, filename, lineno)
        if key not in self._seen:
            self._seen.add(key)
            self._first[key] = str(message).splitlines()[0] if str(message) else ""
            self._previous(message, category, filename, lineno, file, line)
            return
        count, _ = self._pending.get(key, (0, ""))
        self._pending[key] = (count + 1, self._first[key])

    def count(self) -> int:
        """Warnings counted but not yet summarised."""
        return sum(n for n, _ in self._pending.values())

    def flush(self, where: str) -> None:
        """Show ``... and N more like this <where>`` for every place that repeated since the
        last flush (``where`` e.g. ``"in epoch 3"``), through the usual warning display."""
        pending, self._pending = self._pending, {}
        for (category, filename, lineno), (count, first) in pending.items():
            text = f"... and {count} more like this {where} ({first[:80]})"
            self._previous(text, category, filename, lineno, None, "")
