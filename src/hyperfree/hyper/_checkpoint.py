"""The HyperModule state dict: what each level saves, and its layout across ``fused`` settings.

Per level: the raw hyperparameters, the optimiser state of the tensor it optimises, its step
count and the inputs of its last update (``last``: to rebuild the live graph on load). All
plain tensors and primitives, so ``torch.load(weights_only=True)`` reads it.

Level 0 has two layouts. The reference path keeps one flat vector per state entry (momentum,
Adam's m and v, the last gradient); the fused path (``_fused``) keeps one tensor per weight,
shaped like it. :func:`to_layout` converts between them, so a state saved with ``fused=True``
loads into ``fused=False`` and back, and the run continues on the same trajectory (tested).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .optimizers import HyperOptimizer

__all__ = ["FORMAT", "level_state", "restore_level", "to_layout", "detached", "cloned"]

FORMAT = 1

State = dict[str, Any]  # tensors (flat layout) or lists of tensors (per-weight layout)


def detached(state: State) -> State:
    """Optimiser state is carried detached: only one update per level stays live."""
    return {k: [x.detach() for x in v] if isinstance(v, list) else v.detach()
            for k, v in state.items()}


def cloned(state: State) -> State:
    return {k: [x.detach().clone() for x in v] if isinstance(v, list) else v.detach().clone()
            for k, v in state.items()}


def level_state(level: HyperOptimizer) -> dict[str, Any]:
    last = None if level.last is None else {**level.last, "state": dict(level.last["state"])}
    return {"raw": level.raw.detach(), "state": dict(level.state), "step": level.step_count,
            "last": last}


def restore_level(level: HyperOptimizer, saved: dict[str, Any]) -> None:
    level.raw = saved["raw"].detach().clone().to(level.lower)
    level.state = cloned(saved["state"])
    level.step_count = int(saved["step"])
    last = saved["last"]
    level.last = None if last is None else {**last, "state": cloned(last["state"])}


def _convert(value: Any, shapes: list[torch.Size] | None) -> Any:
    """A flat vector split into tensors of ``shapes``, or (``shapes=None``) a list joined into
    one flat vector; anything already in the wanted layout is returned as it is."""
    if shapes is not None and isinstance(value, Tensor):
        sizes = [s.numel() for s in shapes]
        return [x.view(s) for x, s in zip(value.split(sizes), shapes)]
    if shapes is None and isinstance(value, list):
        return torch.cat([x.reshape(-1) for x in value])
    return value


def to_layout(saved: dict[str, Any], shapes: list[torch.Size] | None) -> dict[str, Any]:
    """Level 0's saved state in the per-weight layout (``shapes``) or the flat one (None)."""
    def state(s: State) -> State:
        return {k: _convert(v, shapes) for k, v in s.items()}

    last = saved["last"]
    if last is not None:
        last = {**last, "state": state(last["state"]), "grad": _convert(last["grad"], shapes)}
    return {**saved, "state": state(saved["state"]), "last": last}
