"""Per-parameter gains for the probes (``benchmarks/agd_variants.py``, ``hf_forks.py``,
``hf_llama.py``): ``--param-gain PATTERN=G`` gives the parameters whose qualified name matches
the fnmatch ``PATTERN`` ``G`` times the step (AGD's per-group ``gain``), a diagnostic, never a
rule."""
from __future__ import annotations

import argparse
import fnmatch
import math
from typing import Any, Sequence

import torch

__all__ = ["param_gain_groups", "pattern_gain"]


def param_gain_groups(model: torch.nn.Module, rules: Sequence[tuple[str, float]]
                      ) -> list[dict[str, Any]]:
    """Parameter groups giving each parameter the gain of the first ``(pattern, gain)`` whose
    fnmatch pattern matches its qualified name (the others: the optimiser's ``gain``); a
    pattern that matches nothing is a ``ValueError`` (a typo would otherwise probe nothing)."""
    named = list(model.named_parameters())
    for pattern, _ in rules:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
            raise ValueError(f"--param-gain {pattern}: matches no parameter of the model "
                             f"(names: {', '.join(n for n, _ in named[:6])}, ...)")
    groups: dict[float | None, list[torch.nn.Parameter]] = {}
    for n, p in named:
        gain = next((g for pat, g in rules if fnmatch.fnmatchcase(n, pat)), None)
        groups.setdefault(gain, []).append(p)
    return [{"params": ps, **({} if g is None else {"gain": g})} for g, ps in groups.items()]


def pattern_gain(text: str) -> tuple[str, float]:
    """``(pattern, gain)`` from ``PATTERN=GAIN`` (an argparse ``type``)."""
    pattern, sep, gain = text.rpartition("=")
    try:
        value = float(gain)
    except ValueError:
        value = math.nan
    if not sep or not pattern or not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give PATTERN=GAIN with a positive gain, "
                                         "e.g. 'fc.*=2'")
    return pattern, value
