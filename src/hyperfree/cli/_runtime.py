"""What every long-running command shares: the ``--threads`` flag and Ctrl-C handling.

``hyperfree train`` and ``hyperfree experiment`` both train, so both let the user pick torch's
CPU thread count and both turn the first Ctrl-C into a clean stop at the next step boundary
(the loop then saves a checkpoint); a second Ctrl-C interrupts at once.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
from typing import Any, Iterator

__all__ = ["add_threads_flag", "set_threads", "stop_on_ctrl_c"]


def add_threads_flag(p: argparse.ArgumentParser, **kwargs: Any) -> None:
    """Declare ``--threads N`` (extra ``kwargs`` such as ``default=`` go to ``add_argument``)."""
    p.add_argument("--threads", type=int, metavar="N", **{"default": None, **kwargs},
                   help="torch CPU threads (default: torch's choice; 1 is faster on a CPU "
                        "shared with other jobs). Exact resume needs the same number")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless ``None``; ValueError if it is below 1."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[Any]:
    """Yield a :class:`~hyperfree.train.StopFlag` that the first Ctrl-C raises at a step boundary.

    Pass the flag to ``train`` / ``run_experiment`` as a callback. Before training starts (data
    loading, model building) there is nothing to save, so Ctrl-C interrupts at once. The
    previous SIGINT handler is restored on exit.
    """
    from hyperfree.train import StopFlag

    stop = StopFlag()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
        stop.request()  # training: stop at the next step boundary; before it: at once

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
