"""The pieces' state of an AGD optimiser: made, handed to the step, saved and restored the same
way for every preset (bookkeeping of :class:`hyperfree.optim.AGD`).

A piece (:mod:`.pieces`) with state describes it as a ``NamedTuple``: fields listed in its
``per_param`` hold one tensor per parameter (kept in ``optimizer.state[p][field]``, where torch's
``Optimizer.state_dict`` saves them), every other field is one tensor next to the weights (kept
here, saved under ``state_dict()["agd"]["state"][slot][field]``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["PieceStates"]

#: state_dict keys of earlier versions -> (slot, field) of the piece that holds them now
_LEGACY = {"momentum_steps": ("source", "count"), "fresh_ema": ("estimate", "H")}


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (its in-place updates write through); ``t`` otherwise."""
    return getattr(t, "_local_tensor", t)


class PieceStates:
    """The global fields of every piece's state, by slot (``{slot: {field: tensor}}``)."""

    def __init__(self, slots: Mapping[str, Any]):
        self.slots = dict(slots)
        self.fields: dict[str, dict[str, Tensor]] = {}

    def prepare(self, params: list[Tensor], per_param: dict) -> None:
        """Make every piece's state for ``params`` where it does not exist yet (per-parameter
        fields go into ``per_param``, the optimiser's ``state``)."""
        for slot, piece in self.slots.items():
            if piece is None or piece.State is None or slot in self.fields:
                continue
            state = piece.init(params)
            self.fields[slot] = {f: v for f, v in state._asdict().items()
                                 if f not in piece.per_param}
            for f in piece.per_param:
                for p, v in zip(params, getattr(state, f)):
                    per_param[p].setdefault(f, v)

    def of(self, params: list[Tensor], per_param: dict) -> dict[str, Any]:
        """Every piece's state, with its per-parameter fields for ``params`` (local shards)."""
        out: dict[str, Any] = {}
        for slot, piece in self.slots.items():
            if piece is None or piece.State is None:
                out[slot] = None
                continue
            fields = dict(self.fields.get(slot, {}))
            fields.update({f: [local(per_param[p][f]) for p in params]
                           for f in piece.per_param})
            out[slot] = piece.State(**fields)
        return out

    def saved(self) -> dict[str, dict[str, Tensor]]:
        return {s: {f: v.detach().clone() for f, v in d.items()} for s, d in self.fields.items()}

    def load(self, saved: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()["agd"]`` (also in the format before pieces existed)."""
        pieces = saved.get("state") or _legacy(dict(saved))
        for slot, fields in self.fields.items():
            for f, t in fields.items():
                value = pieces.get(slot, {}).get(f)
                t.copy_(torch.as_tensor(value, dtype=t.dtype) if value is not None
                        else torch.zeros_like(t))


def _legacy(saved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pieces' state of a state_dict written before pieces existed."""
    out: dict[str, dict[str, Any]] = {}
    saved.setdefault("momentum_steps", saved.get("steps", 0))
    for key, (slot, field) in _LEGACY.items():
        if key in saved:
            out.setdefault(slot, {})[field] = saved[key]
    return out
