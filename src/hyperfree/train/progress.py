"""The progress bar: one tqdm bar per epoch showing loss, accuracy and the stepper's scalars.

The loop hands over numbers it has already synced (every ``log_every`` steps), so the bar never
forces a device synchronisation itself. Without tqdm installed (it is the ``train`` extra) or
when disabled (non-zero ranks, tests) every method is a no-op.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Progress"]


class Progress:
    """``start(epoch, total, initial)``, ``update(n, values)``, ``close(values)``."""

    def __init__(self, *, enabled: bool, epochs: int) -> None:
        self._epochs = epochs
        self._bar: Any = None
        self._tqdm: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # optional extra: run without a bar
                tqdm = None
            self._tqdm = tqdm

    @property
    def active(self) -> bool:
        """Whether a bar is shown (callers skip computing values otherwise)."""
        return self._tqdm is not None

    def start(self, epoch: int, total: int, initial: int = 0) -> None:
        """Open the bar for ``epoch`` (0-based) with ``total`` steps, ``initial`` already done."""
        if self._tqdm is not None:
            self._bar = self._tqdm(total=total, initial=initial, dynamic_ncols=True, leave=True,
                                   desc=f"epoch {epoch + 1}/{self._epochs}", unit="step")

    def update(self, n: int, values: dict[str, float] | None = None) -> None:
        """Advance by ``n`` steps; show ``values`` (already on the host) if given."""
        if self._bar is None:
            return
        if values:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)
        self._bar.update(n)

    def close(self, values: dict[str, float] | None = None) -> None:
        """Show the epoch's final ``values`` and close the bar."""
        if self._bar is None:
            return
        if values:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)
        self._bar.close()
        self._bar = None


def _fmt(value: float) -> str:
    return f"{value:.4g}"
