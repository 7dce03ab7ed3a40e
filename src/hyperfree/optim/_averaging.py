"""The averaged weights of an AGD preset with an ``average`` piece (:class:`~.pieces.PolyAverage`):
:class:`AveragedWeights`, the part of :class:`hyperfree.optim.AGD` that moves them in and out of
the model (Schedule-Free's ``eval()``/``train()`` convention, which Hugging Face's Trainer
calls). The average itself is updated by the step (``AGD.step``)."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from ._piece_state import local

__all__ = ["AveragedWeights"]


class AveragedWeights:
    """``eval()``, ``train()``, ``averaged()`` for an optimiser with ``preset``, ``_pieces``,
    ``state`` (``state[p]["average"]``), ``_entries()`` and the flag ``_evaluating``."""

    @property
    def averaging(self) -> bool:
        """Whether the preset averages the weights (then :meth:`eval` puts the average in the
        model, and training code evaluates between :meth:`eval` and :meth:`train`)."""
        return self.preset.average is not None

    @torch.no_grad()
    def eval(self) -> None:
        """Put the averaged weights in the model for evaluation (Schedule-Free's convention;
        Hugging Face's Trainer calls it). The trained weights are kept in the optimiser's state
        until :meth:`train`; ``step()`` refuses in between. A no-op without averaging, before
        any step, and when already evaluating. Models with BatchNorm: recompute its statistics
        at the average (:func:`hyperfree.optim.recalibrate_batchnorm`)."""
        if self._evaluating or not self.averaging:
            return
        if not int(self._pieces.fields["average"]["count"]):
            return
        self._swap()
        self._evaluating = True

    @torch.no_grad()
    def train(self) -> None:
        """Put the trained weights back in the model (after :meth:`eval`; else a no-op)."""
        if self._evaluating:
            self._swap()
            self._evaluating = False

    @contextlib.contextmanager
    def averaged(self) -> Any:
        """``with opt.averaged(): evaluate(model)``: :meth:`eval`, then :meth:`train` (unless
        the model already held the average)."""
        was = self._evaluating
        self.eval()
        try:
            yield self
        finally:
            if not was:
                self.train()

    def _swap(self) -> None:
        """Exchange every parameter with its average, one tensor at a time (bit-exact)."""
        for _, _, p, _ in self._entries():
            x = self.state[p]["average"]
            w, a = local(p), local(x)
            held = w.clone()
            w.copy_(a)
            a.copy_(held)
