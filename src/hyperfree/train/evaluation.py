"""The test metric of each record: :func:`evaluate`, at the stepper's evaluation point."""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import torch

from hyperfree.optim.batchnorm import batchnorm_layers, recalibrate_batchnorm

from .distributed import DistContext
from .losses import correct_count
from .stats import EpochStats

__all__ = ["evaluate", "call_hook"]


def call_hook(stepper: Any, name: str) -> None:
    """Call the stepper's optional ``train()`` / ``eval()`` hook, if it has one."""
    hook = getattr(stepper, name, None)
    if callable(hook):
        hook()


@torch.no_grad()
def evaluate(stepper: Any, loader: Any, n_batches: int, loss_fn: Callable[..., torch.Tensor],
             device: torch.device, dist: DistContext,
             calibration: Callable[[], Iterable[Any]] | None = None) -> dict[str, float]:
    """Test loss and accuracy over the first ``n_batches`` batches of ``loader``, reduced over
    the ranks, with ``stepper.module`` in eval mode (and the stepper's ``eval`` hook: e.g.
    Schedule-Free evaluates at its averaged point).

    On text the loop passes every test window and cross-entropy: with the test stream ``u`` of
    ``m`` tokens and ``N = (m - 1) // T`` windows, the scored targets are ``u[1 : N T + 1]``
    (every test character but the first and the last ``m - 1 - N T < T``), target
    ``u[iT + t + 1]`` predicted from ``u[iT : iT + t + 1]`` (its own window only).
    ``test_loss = Σ_tokens (logsumexp(f) − f_y) / (N T)`` in nats (each batch's mean weighted
    by its token count), ``test_acc`` the fraction of argmax hits.

    A stepper that evaluates at averaged weights (``stepper.averaged``) gets BatchNorm
    statistics recomputed there from ``calibration()`` (training batches;
    :func:`hyperfree.optim.recalibrate_batchnorm`) for this evaluation only: the trained
    statistics and the random streams are put back afterwards, so evaluating never changes
    training.
    """
    module = stepper.module
    call_hook(stepper, "eval")
    with _calibrated(module, calibration if getattr(stepper, "averaged", False) else None,
                     device):
        out = _measure(module, loader, n_batches, loss_fn, device, dist)
    call_hook(stepper, "train")
    return out


@contextlib.contextmanager
def _calibrated(module: torch.nn.Module, calibration: Callable[[], Iterable[Any]] | None,
                device: torch.device) -> Iterator[None]:
    layers = batchnorm_layers(module) if calibration is not None else []
    if not layers:
        yield
        return
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        recalibrate_batchnorm(module, calibration())
    try:
        yield
    finally:
        for m, state in zip(layers, saved):
            m.load_state_dict(state)


def _measure(module: torch.nn.Module, loader: Any, n_batches: int,
             loss_fn: Callable[..., torch.Tensor], device: torch.device, dist: DistContext
             ) -> dict[str, float]:
    module.eval()
    stats = EpochStats(device)
    loader.set_epoch(0)
    for x, y in itertools.islice(iter(loader), n_batches):
        logits = module(x)
        stats.add_batch(loss_fn(logits, y), correct_count(logits, y), y.numel())
    module.train()
    out = stats.summary("test", dist)
    return {"test_loss": out["test_loss"], "test_acc": out["test_acc"]}
