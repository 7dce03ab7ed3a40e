"""What every long-running command shares: the ``--threads`` flag and Ctrl-C/SIGTERM handling.

``hyperfree train`` and ``hyperfree experiment`` both train, so both pick torch's CPU thread
count and both turn the first Ctrl-C (SIGINT) or SIGTERM into a clean stop at the next step
boundary (the loop then saves a checkpoint and the run directory's lock is released); a second
one interrupts at once.

Threads. torch's default is one thread per core, and on a machine whose cores are busy with
other work those threads spin in each other's barriers: an epoch of the default run took
26-509 s instead of 4 s beside one other job. Without ``--threads``, :func:`set_threads` gives
torch the cores that are idle when the command starts (:func:`pick_threads` of
:func:`busy_cores`, measured over 0.2 s from ``/proc/stat``), at least 1.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = ["add_threads_flag", "set_threads", "pick_threads", "busy_cores", "stop_on_ctrl_c",
           "EXIT_SIGNAL"]


def add_threads_flag(p: argparse.ArgumentParser, **kwargs: Any) -> None:
    """Declare ``--threads N`` (extra ``kwargs`` such as ``default=`` go to ``add_argument``)."""
    p.add_argument("--threads", type=int, metavar="N", **{"default": None, **kwargs},
                   help="torch CPU threads (default: the cores that are idle at the start, at "
                        "least 1; a resumed run: the run's own). Exact resume needs the same "
                        "number")


def pick_threads(cores: int, busy: float) -> int:
    """Threads for ``cores`` CPUs of which ``busy`` (a core count, fractional) are in use by
    other processes: the idle ones, rounded half up, between 1 and ``cores``."""
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; ``None`` where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def busy_cores(interval: float = 0.2) -> float | None:
    """How many of this machine's cores other processes keep busy (this one sleeps while it
    measures); ``None`` where ``/proc/stat`` cannot be read."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads``: ``threads``, or (``None``) :func:`pick_threads` of the idle
    cores; ValueError if ``threads`` is below 1. Returns the number set."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        busy = busy_cores()
        threads = cores if busy is None else pick_threads(cores, busy)
    torch.set_num_threads(threads)
    return threads


EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[Any]:
    """Yield a :class:`~hyperfree.train.StopFlag` that the first Ctrl-C or SIGTERM raises at a
    step boundary (``flag.signum`` says which; :data:`EXIT_SIGNAL` the exit status).

    Pass the flag to ``train`` / ``run_experiment`` as a callback. Before training starts (data
    loading, model building) there is nothing to save, so the signal interrupts at once. The
    previous handlers are restored on exit.
    """
    from hyperfree.train import StopFlag

    stop = StopFlag()
    previous = {sig: signal.getsignal(sig) for sig in EXIT_SIGNAL}

    def on_signal(signum: int, frame: Any) -> None:
        for sig in EXIT_SIGNAL:  # a second signal: at once
            signal.signal(sig, signal.default_int_handler)
        stop.signum = signum
        stop.request()  # training: stop at the next step boundary; before it: at once

    for sig in EXIT_SIGNAL:
        signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
