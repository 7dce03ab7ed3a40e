"""Non-finite steps reported to the user without making the step wait for the device.

On an accelerator AGD decides on the device whether a step's gradients were finite (no host
sync). Each step's flag is copied into a pinned host buffer behind a CUDA event; the next steps
read the flags whose events have completed (``drain(block=False)``), and only the properties
that promise exact counts (``skipped_steps``, ``state_dict``) wait (``drain(block=True)``).
Pinned buffers are reused once read, so a step allocates no page-locked memory either.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = ["FlagQueue", "first_nonfinite", "warn_nonfinite"]


def warn_nonfinite(name: str, stacklevel: int = 4) -> None:
    warnings.warn(f"AGD skipped a step: the gradient of {name!r} is not finite (NaN or Inf); "
                  "weights and momentum left unchanged", RuntimeWarning, stacklevel=stacklevel)


def first_nonfinite(names: list[str], grads: list[Tensor]) -> str:
    """The first of ``names`` whose gradient holds a NaN or an Inf (host sync: CPU only)."""
    for n, g in zip(names, grads):
        if not bool(torch.isfinite(g).all()):
            return n
    return names[0]


class FlagQueue:
    """Finite flags of device-side steps on their way to the host."""

    def __init__(self) -> None:
        self.pending: list[tuple[Tensor, Any, list[str]]] = []
        self._pool: list[Tensor] = []  # pinned 1-element buffers, free

    def record(self, ok: Tensor, names: list[str]) -> None:
        """Queue ``ok`` (0-dim bool on the device) without waiting for it."""
        flags = ok.reshape(1)
        if flags.device.type != "cuda":
            self.pending.append((flags, None, names))
            self.drain(block=False)
            return
        host = self._pool.pop() if self._pool else torch.empty(1, dtype=torch.bool,
                                                               pin_memory=True)
        host.copy_(flags, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((host, event, names))

    def drain(self, block: bool) -> None:
        """Warn for every queued flag that has reached the host (all of them if ``block``)."""
        still = []
        for flags, event, names in self.pending:
            if event is not None and not event.query():
                if not block:
                    still.append((flags, event, names))
                    continue
                event.synchronize()
            if not bool(flags[0]):  # counted on the device already
                warn_nonfinite("one of " + ", ".join(names[:3])
                               + (", ..." if len(names) > 3 else ""))
            if event is not None:
                self._pool.append(flags)
        self.pending = still

    def clear(self) -> None:
        self.pending = []
