"""The reference twin as an optimiser: :class:`ReferenceAGD`, the test oracle of ``hyperfree.AGD``.

AGD's bookkeeping (kinds, groups, counters, the pieces' state, ``state_dict``) with the maths of
:func:`tests.optim.reference_step.reference_step` — every cell of every kind written out one at
a time, sharing no code with the fast step — instead of :func:`hyperfree.optim.functional.agd`.
It reads and writes the same state as AGD (``state[p]["momentum_buffer"]``, the momentum
count, the fresh and fading estimates' state), so the two can be compared step by step,
resumed from each other's ``state_dict``, and run on FSDP2 shards (every tensor is gathered
whole here: this is an oracle, not a fast path). Run its comparisons with ``pytest
tests/optim``; the benchmark's "reference twin" row (``benchmarks/step.py``) uses it too.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import hyperfree
from hyperfree.optim import Ball, Fading, Rotation, Sphere

from .reference_step import reference_step

__all__ = ["ReferenceAGD"]

_FADING = ("H", "n", "peak", "least")
_RETRACT = {Sphere: "sphere", Ball: "ball", Rotation: "rotation", type(None): None}


class ReferenceAGD(hyperfree.AGD):
    """``hyperfree.AGD`` whose step is the reference twin's (same arguments)."""

    def _update(self, live: tuple[int, ...], grads: list[Tensor], host: bool
                ) -> tuple[Tensor, Tensor]:
        # every parameter, those without a gradient as None: they count in L, are not moved
        chosen = self._entries()
        by_index = dict(zip(live, grads))
        grads = [by_index.get(j) for j in range(len(chosen))]
        live = tuple(range(len(chosen)))
        preset = self.preset
        beta, fresh = preset.source.beta, preset.estimate.lagged
        params = [p for _, _, p, _ in chosen]
        bufs = [self.state[p]["momentum_buffer"] for p in params] if beta else None
        sharded = self._sharded is not None
        if sharded:  # every tensor whole on every rank, written back afterwards
            full_p = [p.full_tensor() for p in params]
            grads = [g.full_tensor() if g is not None else None for g in grads]
            full_b = [b.full_tensor() for b in bufs] if beta else None
        else:
            full_p, full_b = params, bufs
        finite = all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
        count = self._pieces.fields["source"]["count"] if beta else None
        before = int(count) if beta else 0
        if beta and finite:
            count.add_(1)
        ema = [float(self._pieces.fields["estimate"]["H"])] if fresh else None
        fading = isinstance(preset.estimate, Fading)
        held = [float(self._pieces.fields["estimate"][f]) for f in _FADING] if fading else None
        # preset.head: each head's gain × 1/ρ, ρ measured by the optimiser's hooks (_head.py)
        heads = {id(w): float(f) for w, f in (self._head.factors(self.L) if self._head else [])}
        eta = reference_step(
            full_p, grads, [k for _, _, _, k in chosen], family=preset.family.name,
            gains=[float(g["gain"]) * heads.get(id(p), 1.0) for g, _, p, _ in chosen],
            lrs=[float(g["lr"]) for g, _, _, _ in chosen], momentum=beta, buffers=full_b,
            step=before if fresh else max(before + int(finite), 1),
            retract=_RETRACT[type(preset.retraction)], ns_steps=self.ns_steps, fresh_ema=ema,
            fresh_beta=preset.estimate.beta if fresh else None, forks=preset.forks,
            streams=preset.streams, fading=held,
            fading_beta=preset.estimate.beta if fading else None,
            fading_power=preset.estimate.power if fading else 1.0, lazy_rows=preset.lazy_rows)
        if fresh:
            self._pieces.fields["estimate"]["H"].fill_(ema[0])
        for f, v in zip(_FADING if fading else (), held or ()):
            self._pieces.fields["estimate"][f].fill_(v)
        if sharded:
            rows = [self._sharded.rows[j] for j in live]
            for p, f, r in zip(params, full_p, rows):
                p.to_local().copy_(f.narrow(0, r.start, r.count))
            for b, f, r in zip(bufs or [], full_b or [], rows):
                b.to_local().copy_(f.narrow(0, r.start, r.count))
        return eta, torch.tensor(finite)


def agd_pair(model: Any, twin: Any, **kwargs: Any) -> tuple[hyperfree.AGD, ReferenceAGD]:
    """The fast optimiser of ``model`` and the reference optimiser of its copy ``twin``."""
    return hyperfree.AGD(model, **kwargs), ReferenceAGD(twin, **kwargs)


def make_agd(*args: Any, path: str = "fast", **kwargs: Any) -> hyperfree.AGD:
    """``hyperfree.AGD(*args, **kwargs)`` (``path="fast"``) or its reference twin."""
    if path not in ("fast", "reference"):
        raise ValueError(f"path must be 'fast' or 'reference', got {path!r}")
    return (hyperfree.AGD if path == "fast" else ReferenceAGD)(*args, **kwargs)
