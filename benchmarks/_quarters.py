"""How the probes (``_participation.py``, ``_hypergain.py``, ``_linefit.py``) report a
quantity recorded every step: its median over each quarter of the run."""
from __future__ import annotations

import statistics
from typing import Sequence

__all__ = ["quarter_medians"]


def quarter_medians(*series: Sequence[float], digits: int = 3) -> list[float]:
    """For each series in turn, the medians of its four quarters (a series shorter than four
    repeats its last value; an empty one gives zeros), rounded to ``digits``."""
    out = []
    for x in series:
        n = max(1, len(x) // 4)
        out += [round(statistics.median(list(x[k * n:(k + 1) * n]) or list(x[-1:]) or [0.0]),
                      digits) for k in range(4)]
    return out
