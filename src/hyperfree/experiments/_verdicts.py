"""Did the claim reproduce? One pure function per experiment: rows in, :class:`Verdict` out.

Each verdict reads only the final-epoch means of the aggregated rows and states, with the
numbers, whether the measured behaviour matches the paper's claim. The thresholds are the
report's definitions of "trains" and "matches" and are written in each verdict's text:
a run *trains* if its test accuracy is at least :data:`TRAINS` (chance on Fashion-MNIST is 10%);
two accuracies *match* if they differ by at most :data:`MATCH` (absolute).
"""
from __future__ import annotations

import math
from typing import Sequence

from ._spec import DEFAULT_METRIC, Row, Verdict

__all__ = ["TRAINS", "MATCH", "score", "best", "depth_verdict", "tuned_verdict", "shape_verdict",
           "batch_verdict", "conv_verdict", "towers_verdict", "peers_verdict"]

TRAINS = 0.5
MATCH = 0.02


def _acc(row: Row) -> float:
    v = row.mean("test_acc")
    return v if math.isfinite(v) else 0.0


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def score(row: Row, metric: tuple[str, bool] = DEFAULT_METRIC) -> float:
    """``row``'s mean of ``metric = (key, higher_is_better)``, signed so that larger is better;
    ``-inf`` when it is not finite (a diverged seed) or was never recorded."""
    key, higher = metric
    v = row.mean(key)
    if not math.isfinite(v):
        return -math.inf
    return v if higher else -v


def best(rows: Sequence[Row], group: str, panel: str | None = None,
         metric: tuple[str, bool] = DEFAULT_METRIC) -> Row | None:
    """The row of ``group`` (in ``panel``) with the best mean ``metric`` (default: the highest
    test accuracy); diverged rows come last."""
    cands = [r for r in rows if r.group == group and (panel is None or r.panel == panel)]
    return max(cands, key=lambda r: score(r, metric), default=None)


def _missing(what: str) -> Verdict:
    return Verdict("n/a", f"not measured: no finished runs of {what}")


def depth_verdict(rows: Sequence[Row]) -> Verdict:
    agd, adam, sgd = best(rows, "agd"), best(rows, "adam"), best(rows, "sgd")
    if agd is None or adam is None or sgd is None:
        return _missing("agd, adam and sgd")
    text = (f"AGD {_pct(_acc(agd))}, Adam (1e-3) {_pct(_acc(adam))}, SGD (0.1) "
            f"{_pct(_acc(sgd))} test accuracy (trains = at least {_pct(TRAINS)}).")
    agd_ok = _acc(agd) >= TRAINS
    fails = [name for name, r in (("Adam", adam), ("SGD", sgd)) if _acc(r) < TRAINS]
    if agd_ok and len(fails) == 2:
        return Verdict("yes", text + " AGD trains; both defaults fail.")
    if agd_ok:
        return Verdict("partly", text + " AGD trains, but not every default failed.")
    return Verdict("no", text + " AGD did not reach the threshold.")


def tuned_verdict(rows: Sequence[Row]) -> Verdict:
    agd = best(rows, "agd")
    tuned = [r for r in (best(rows, "adam"), best(rows, "sgd")) if r is not None]
    if agd is None or not tuned:
        return _missing("agd and the grid")
    top = max(tuned, key=_acc)
    grid = [r for r in rows if r.group in ("adam", "sgd")]
    cost = sum(r.seconds for r in grid) / max(agd.seconds, 1e-9)
    gap = _acc(top) - _acc(agd)
    text = (f"AGD {_pct(_acc(agd))} (objective {agd.mean('train_loss'):.4g}) vs best of grid "
            f"{top.group} lr {top.x:g} {_pct(_acc(top))} (objective "
            f"{top.mean('train_loss'):.4g}); the {len(grid)}-run grid cost {cost:.1f}x one AGD "
            "run.")
    if gap < -MATCH:
        return Verdict("yes", text + f" AGD beats the tuned best by {_pct(-gap)}.")
    if gap <= MATCH:
        return Verdict("yes", text + f" AGD is within {_pct(MATCH)} of the tuned best.")
    return Verdict("no", text + f" AGD is {_pct(gap)} behind the tuned best "
                   f"(match = within {_pct(MATCH)}).")


def shape_verdict(rows: Sequence[Row]) -> Verdict:
    if not rows:
        return _missing("any shape")
    failed = [r for r in rows if _acc(r) < TRAINS]
    top = max(rows, key=_acc)
    text = (f"{len(rows) - len(failed)} of {len(rows)} shapes train (test accuracy >= "
            f"{_pct(TRAINS)}); best {_pct(_acc(top))} at depth {top.y:g}, width {top.x:g}.")
    if not failed:
        return Verdict("yes", text)
    names = ", ".join(f"depth {r.y:g} x width {r.x:g}" for r in failed)
    return Verdict("partly" if len(failed) < len(rows) else "no", text + f" Failed: {names}.")


def batch_verdict(rows: Sequence[Row]) -> Verdict:
    if not rows:
        return _missing("any batch size")
    failed = [r for r in rows if _acc(r) < TRAINS]
    accs = ", ".join(f"{r.x:g}: {_pct(_acc(r))}" for r in sorted(rows, key=lambda r: r.x or 0))
    text = f"Test accuracy by batch size: {accs}."
    if not failed:
        return Verdict("yes", text + " Every batch size trains.")
    return Verdict("partly" if len(failed) < len(rows) else "no",
                   text + f" {len(failed)} batch size(s) below {_pct(TRAINS)} in this budget.")


def conv_verdict(rows: Sequence[Row]) -> Verdict:
    panels = sorted({r.panel for r in rows})
    if not panels:
        return _missing("any conv net")
    parts, ok = [], 0
    for panel in panels:
        agd, adam = best(rows, "agd", panel), best(rows, "adam", panel)
        if agd is None or adam is None:
            parts.append(f"{panel}: incomplete")
            continue
        gap = _acc(adam) - _acc(agd)
        ok += gap <= MATCH
        parts.append(f"{panel}: AGD {_pct(_acc(agd))} vs tuned Adam (lr {adam.x:g}) "
                     f"{_pct(_acc(adam))}")
    text = "; ".join(parts) + f" (match = within {_pct(MATCH)})."
    status = "yes" if ok == len(panels) else ("partly" if ok else "no")
    return Verdict(status, text)


def _spread(rows: Sequence[Row], group: str, panel: str) -> float | None:
    accs = [_acc(r) for r in rows if r.group == group and r.panel == panel]
    return max(accs) - min(accs) if len(accs) >= 2 else None


def towers_verdict(rows: Sequence[Row]) -> Verdict:
    """Sensitivity = spread (max - min) of final test accuracy over the initial step sizes."""
    pairs = (("sgd", "sgd-sgd"), ("sgd-sgd", "sgd-sgd-sgd"), ("adam", "adam-sgd"))
    panels = sorted({r.panel for r in rows})
    held, total, parts = 0, 0, []
    for panel in panels:
        spreads = {g: _spread(rows, g, panel) for g in ("sgd", "sgd-sgd", "sgd-sgd-sgd",
                                                        "adam", "adam-sgd")}
        parts.append(f"{panel}: " + ", ".join(f"{g} {100 * s:.0f}" for g, s in spreads.items()
                                              if s is not None))
        for lo, hi in pairs:
            if spreads[lo] is not None and spreads[hi] is not None:
                total += 1
                held += spreads[hi] <= spreads[lo] + 1e-9
    if total == 0:
        return _missing("two step sizes of a tower and its base")
    text = ("Spread of test accuracy over the initial step sizes, in points (lower = less "
            "sensitive) - " + "; ".join(parts) + f". The taller tower was no more sensitive in "
            f"{held} of {total} comparisons.")
    status = "yes" if held == total else ("partly" if held else "no")
    return Verdict(status, text)


def peers_verdict(rows: Sequence[Row]) -> Verdict:
    panels = sorted({r.panel for r in rows})
    if not panels:
        return _missing("any setting")
    parts = []
    for panel in panels:
        groups = sorted({r.group for r in rows if r.panel == panel})
        ranked = sorted((best(rows, g, panel) for g in groups), key=lambda r: -_acc(r))
        order = ", ".join(f"{r.group} {_pct(_acc(r))}" for r in ranked if r is not None)
        parts.append(f"{panel}: {order}")
    return Verdict("n/a", "Ranked by test accuracy - " + "; ".join(parts) + ".")
