"""Will a run fit in memory? An estimate made before a single weight is allocated.

``--width 100000`` asks for a 40 GB matrix and ``--depth 1000000`` for a million layers; torch
would fail deep inside an allocation, or the kernel would kill the process once the memory is
gone. :func:`check_memory` refuses such a run first, in one line that names the size and the
flags to lower, by building the model on PyTorch's ``meta`` device (shapes without storage)::

    P = Σ numel of the parameters and buffers        (counted as they are registered)
    bytes ≈ COPIES · P · element size,               COPIES = 4

``COPIES`` holds the weights, their gradients and two optimiser states per weight (Adam's two
moments; AGD's momentum and one scratch copy). The count stops as soon as it passes the
budget, so a million-layer model is refused after a few thousand layers (about 2 s), and a
shape whose size overflows int64 (``--width 1000000000000000000``) is refused as well.
Activations are not estimated (a meta forward pass costs more start-up than it saves): one
large activation fails as a single allocation, which :func:`allocation_failure` turns into the
same kind of line. The budget is given by the caller: :func:`available_memory` reads it from
the machine (the CLI does this; the library never reads the machine by itself).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["COPIES", "MemoryEstimate", "estimate_memory", "check_memory", "available_memory",
           "allocation_failure", "format_bytes"]

COPIES = 4


class _OverBudget(Exception):
    """Raised by the registration hook once the count passes the budget."""


class MemoryEstimate:
    """``params`` (numel counted) and ``bytes``; ``over`` if the count was cut short (the
    model is larger still), ``overflow`` if a tensor's size does not fit in int64."""

    def __init__(self, params: int, element_size: int, *, over: bool = False,
                 overflow: bool = False) -> None:
        self.params, self.over, self.overflow = params, over or overflow, overflow
        self.element_size = element_size
        self.bytes = COPIES * params * element_size


def format_bytes(n: float) -> str:
    """``1.5 GB``, ``320 MB`` (powers of 1000)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def estimate_memory(build: Callable[[], nn.Module], budget: int,
                    element_size: int = 4) -> MemoryEstimate:
    """The estimate above for the model ``build()`` makes (built on ``meta``, so ``build``
    must not name a device). Counting stops once ``budget`` bytes are passed (``over``)."""
    count = [0]
    cap = budget // (COPIES * element_size) + 1

    def hook(module: nn.Module, name: str, tensor: Any) -> None:
        if tensor is not None:
            count[0] += tensor.numel()
            if count[0] > cap:
                raise _OverBudget

    handles = [nn.modules.module.register_module_parameter_registration_hook(hook),
               nn.modules.module.register_module_buffer_registration_hook(hook)]
    try:
        with torch.device("meta"):
            build()
    except _OverBudget:
        return MemoryEstimate(count[0], element_size, over=True)
    except RuntimeError as exc:  # a shape whose byte size overflows int64
        if "overflow" not in str(exc).lower():
            raise
        return MemoryEstimate(count[0], element_size, overflow=True)
    finally:
        for h in handles:
            h.remove()
    return MemoryEstimate(count[0], element_size)


def check_memory(estimate: MemoryEstimate, budget: int, what: str, flags: str) -> None:
    """ValueError (one line) if ``estimate`` exceeds ``budget`` bytes; ``what`` names the
    model, ``flags`` the flags to lower."""
    if estimate.bytes <= budget and not estimate.over:
        return
    if estimate.overflow:
        raise ValueError(f"{what} has a weight too large to exist (its size overflows a 64-bit "
                         f"count); lower {flags}")
    if estimate.over:
        raise ValueError(f"{what} needs more than the {format_bytes(budget)} of memory "
                         f"available to train (over {estimate.params:.3g} parameters, "
                         f"{COPIES} copies of {estimate.element_size} bytes each); lower {flags}")
    raise ValueError(f"{what} needs about {format_bytes(estimate.bytes)} to train "
                     f"({estimate.params:.3g} parameters), but {format_bytes(budget)} of memory "
                     f"is available; lower {flags}")


def allocation_failure(exc: BaseException) -> str | None:
    """If ``exc`` is a failed allocation (``MemoryError``, ``torch.OutOfMemoryError``, the
    CPU allocator's RuntimeError), a short description with the size asked for; else None."""
    text = str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        match = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", text)
        return "out of device memory" + (f": {match.group(1)} asked for" if match else "")
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RuntimeError) and "can't allocate memory" in text:
        match = re.search(r"allocate (\d+) bytes", text)
        size = f": {format_bytes(int(match.group(1)))} asked for" if match else ""
        return f"out of memory{size}"
    return None


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device``: CUDA's free memory, or the host's ``MemAvailable``
    (Linux); ``None`` where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
