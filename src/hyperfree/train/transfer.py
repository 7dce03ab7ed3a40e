"""Runs that start from somewhere else: weights another run trained (``init_from``) and a subset
of a classification dataset's classes (``classes``), the two halves of a fine-tuning run.

* ``classes`` is ``"0-4"`` or ``"5,6,7"``: training and test sets keep only those labels (the
  labels are not renumbered, so the model keeps its ``num_classes`` outputs).
* ``init_from`` is a run directory written by ``hyperfree train`` or its ``checkpoint.pt``: the
  model's weights are loaded from it (every tensor, same architecture) instead of the
  optimiser's initialisation; the optimiser's state starts fresh.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint

__all__ = ["parse_classes", "select_classes", "load_initial_weights"]


def parse_classes(spec: str, num_classes: int | None = None) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"5,7"`` -> (5, 7); ValueError naming a bad spec."""
    out: list[int] = []
    try:
        for part in str(spec).split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if last < first:
                raise ValueError
            out += range(first, last + 1)
    except ValueError:
        raise ValueError(f"classes {spec!r} is not a list of labels such as '0-4' or "
                         "'5,6,7'") from None
    if any(c < 0 or (num_classes is not None and c >= num_classes) for c in out):
        raise ValueError(f"classes {spec!r} names a label outside 0..{(num_classes or 1) - 1}")
    return tuple(sorted(set(out)))


def select_classes(bundle: Any, spec: str) -> Any:
    """``bundle`` with only the examples whose label is in ``spec`` (training and test)."""
    info = bundle.info
    if info.kind == "text" or bundle.train_x is None:
        raise ValueError(f"classes selects examples of a classification dataset held in memory; "
                         f"{info.name!r} is not one: drop --classes")
    keep = torch.tensor(parse_classes(spec, info.num_classes), device=bundle.train_y.device)

    def part(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.isin(y, keep)
        return x[mask], y[mask]

    train_x, train_y = part(bundle.train_x, bundle.train_y)
    test_x, test_y = part(bundle.test_x, bundle.test_y)
    return dataclasses.replace(bundle, train_x=train_x, train_y=train_y, test_x=test_x,
                               test_y=test_y)


@torch.no_grad()
def load_initial_weights(model: nn.Module, source: str) -> Path:
    """Load ``model``'s weights from ``source`` (a run directory or its checkpoint file);
    returns the file. CheckpointError (one line) if it is missing, unreadable or does not fit."""
    path = Path(source)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    data = load_checkpoint(path, required=("model",))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path} do not fit this model "
                              f"({str(exc).splitlines()[0]}); --init-from needs a run of the "
                              "same --arch, --depth, --width and dataset") from None
    return path
