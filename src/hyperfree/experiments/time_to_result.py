"""Time to result: how far into its run a contestant first reaches a reference's final number.

The race's margins compare final numbers at one horizon. A second reading, the one a user who
stops when a target is reached sees, is the fraction of the run's steps the default needs to
reach the best tuned AdamW's final test number on the same workload and horizon (AdamW's
schedule is tuned to that horizon; the default has none):

.. code-block:: text

    curve      (s_1, v_1), …, (s_n, v_n): the test number at each evaluation, mean over seeds
    reached    v ≥ v*  (accuracy)   or   v ≤ v*  (loss),  v* = the reference's final mean
    crossing   the first i with v_i reached; s = s_{i-1} + (v* − v_{i-1})/(v_i − v_{i-1}) ·
               (s_i − s_{i-1})   (linear between the two evaluations around it)
    fraction   s / s_n; if v_1 already reached it, s_1 / s_n is an upper bound ("≤")

A curve that never reaches ``v*`` has no time to result (the margin is then ≤ 0 as well).
Nothing here is a target: it is reported beside the margins (``docs/race.md``).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from ._spec import DEFAULT_METRIC, Row
from ._verdicts import best

__all__ = ["Reach", "steps_to_reach", "time_to_result", "format_reach",
           "describe_time_to_result"]

Reach = tuple[float, bool]  # (fraction of the run, upper bound only)


def steps_to_reach(curve: Sequence[tuple[int, float]], target: float, higher: bool
                   ) -> Reach | None:
    """(fraction of the run, bounded) at which ``curve`` first reaches ``target`` (module
    docstring); ``None`` if it never does, has no points, or turns non-finite first."""
    if not curve or not math.isfinite(target):
        return None
    end = curve[-1][0]
    if end <= 0:
        return None
    prev: tuple[int, float] | None = None
    for step, value in curve:
        if not math.isfinite(value):
            return None
        if (value >= target) if higher else (value <= target):
            if prev is None:
                return step / end, True
            s0, v0 = prev
            t = (target - v0) / (value - v0) if value != v0 else 1.0
            return (s0 + t * (step - s0)) / end, False
        prev = (step, value)
    return None


def time_to_result(rows: Sequence[Row], group: str, reference: Mapping[str, Row],
                   panels: Sequence[str], metrics: Mapping[str, tuple[str, bool]]
                   ) -> dict[str, Reach | None]:
    """{panel: when the curve of ``group``'s best row there reaches ``reference[panel]``'s
    final mean} for every panel with both (a panel missing either is left out)."""
    out: dict[str, Reach | None] = {}
    for panel in panels:
        metric = metrics.get(panel, DEFAULT_METRIC)
        ours = best(rows, group, panel, metric)
        if ours is None or panel not in reference:
            continue
        key, higher = metric
        curve = ours.curves.get(key, ())
        if curve:
            out[panel] = steps_to_reach(curve, reference[panel].mean(key), higher)
    return out


def format_reach(r: Reach | None) -> str:
    """``"97%"``, ``"≤ 50%"`` (reached at the first evaluation) or ``"not reached"``."""
    if r is None:
        return "not reached"
    return f"{'≤ ' if r[1] else ''}{100 * r[0]:.0f}%"


def describe_time_to_result(reach: Mapping[str, Reach | None]) -> str:
    """``"conv 97%, gpt 50%, fcn32 ≤ 50%, lstm not reached"``."""
    return ", ".join(f"{p} {format_reach(r)}" for p, r in reach.items()) or "not measured"
