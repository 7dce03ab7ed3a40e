"""The race's verdict (issues 9, 17): a pure function of the aggregated rows.

Each AGD preset's margin to the best AdamW of the grid (:func:`margin`), its worst case over the
workloads, the preset the race chooses (best worst case, :func:`_choose`), and the issues'
targets for the current default: ≥ the best AdamW on every workload (where AdamW's best
learning rate is bracketed by the runs, :func:`bracket`), ≥ every learning-rate-free peer, the
margin at the long horizon not smaller than at the short (:data:`LONG_HORIZON`), no divergence,
and the 32-layer FCN trained where the PyTorch defaults do not. The plan (what is run) is
:mod:`hyperfree.experiments.race`, which registers the experiment with this verdict.
"""
from __future__ import annotations

import math
from typing import Collection, Mapping, Sequence

from hyperfree.optim import DEFAULT_PRESET, PRESETS

from ._spec import DEFAULT_METRIC, Row, Verdict
from ._verdicts import TRAINS, best
from .time_to_result import Reach, describe_time_to_result, format_reach, time_to_result

__all__ = ["LR_FREE_PEERS", "FIG1_DEFAULTS", "PRESET_GROUPS", "DEFAULT_GROUP", "METRICS",
           "LONG_HORIZON", "error", "margin", "bracket", "judge"]

#: the peers the issue's target "≥ every learning-rate-free peer" compares with (Muon has an lr)
LR_FREE_PEERS: tuple[str, ...] = ("schedulefree-adamw", "prodigy", "dadapt-adam", "dog")
#: group, optimiser, lr: the AGD paper's Figure 1 baselines at PyTorch defaults (fcn32 only)
FIG1_DEFAULTS: tuple[tuple[str, str, float], ...] = (("adam-default", "adam", 1e-3),
                                                     ("sgd-default", "sgd", 0.1))
PRESET_GROUPS: tuple[str, ...] = tuple(f"agd-{name}" for name in PRESETS)
DEFAULT_GROUP = f"agd-{DEFAULT_PRESET}"
METRICS: Mapping[str, tuple[str, bool]] = {p: ("test_loss", False)
                                           for p in ("gpt", "gpt-long", "lstm")}
#: (short, long) workloads whose margins the verdict compares: the long one's must not be smaller
LONG_HORIZON: tuple[tuple[str, str], ...] = (("conv", "conv-long"), ("gpt", "gpt-long"))


def error(row: Row | None, metric: tuple[str, bool] = DEFAULT_METRIC) -> float:
    """The error of ``row``: 1 − the mean of a higher-is-better metric (accuracy), else the
    mean itself (a loss); ``inf`` if it diverged or is absent."""
    key, higher = metric
    v = row.mean(key) if row is not None else math.nan
    if not math.isfinite(v):
        return math.inf
    return 1.0 - v if higher else v


def margin(err_preset: float, err_adamw: float) -> float | None:
    """``(err_adamw − err_preset) / err_adamw``: positive = AGD better; ``-inf`` if the preset
    diverged; ``None`` if AdamW has no finite error (nothing to compare with)."""
    if not math.isfinite(err_adamw):
        return None
    if not math.isfinite(err_preset):
        return -math.inf
    if err_adamw == 0.0:
        return 0.0 if err_preset == 0.0 else -math.inf
    return (err_adamw - err_preset) / err_adamw


def _value(row: Row | None, metric: tuple[str, bool]) -> str:
    if row is None:
        return "missing"
    v = row.mean(metric[0])
    if not math.isfinite(v):
        return "diverged"
    return f"{100 * v:.1f}%" if metric[0].endswith("_acc") else f"{v:.4g}"


def _pct(m: float | None) -> str:
    if m is None:
        return "n/a"
    return "diverged" if m == -math.inf else f"{100 * m:+.1f}%"


def _margins(rows: Sequence[Row], presets: Sequence[str], panels: Sequence[str],
             metrics: Mapping[str, tuple[str, bool]]
             ) -> tuple[dict[str, dict[str, float | None]], dict[str, Row]]:
    """{preset: {panel: margin}} (absent preset: no entry) and {panel: best AdamW row}."""
    adamw = {p: r for p in panels
             if (r := best(rows, "adamw", p, metrics.get(p, DEFAULT_METRIC))) is not None}
    out: dict[str, dict[str, float | None]] = {}
    for g in presets:
        for p in panels:
            metric = metrics.get(p, DEFAULT_METRIC)
            row = best(rows, g, p, metric)
            if row is not None and p in adamw:
                out.setdefault(g, {})[p] = margin(error(row, metric), error(adamw[p], metric))
    return out, adamw


def _worst(per_panel: Mapping[str, float | None], panels: Sequence[str]
           ) -> tuple[float | None, str, bool]:
    """(worst margin, its panel, complete = defined on every panel)."""
    defined = {p: m for p, m in per_panel.items() if m is not None}
    if not defined:
        return None, "", False
    panel = min(defined, key=lambda p: defined[p])
    return defined[panel], panel, set(defined) == set(panels)


def _noise(rows: Sequence[Row], group: str, panel: str, adamw: Row,
           metric: tuple[str, bool]) -> float:
    """The seed std of ``group``'s metric on ``panel`` in units of the margin (0 for 1 seed)."""
    row, err = best(rows, group, panel, metric), error(adamw, metric)
    if row is None or not math.isfinite(err) or err == 0.0:
        return 0.0
    std = row.metrics.get(metric[0], (math.nan, math.nan))[1]
    return std / err if math.isfinite(std) else 0.0


def _choose(rows: Sequence[Row], margins: Mapping[str, Mapping[str, float | None]],
            adamw: Mapping[str, Row], panels: Sequence[str],
            metrics: Mapping[str, tuple[str, bool]]) -> tuple[str, list[str]]:
    """The preset with the best worst-case margin (complete presets first), and the presets it
    tied with. Worst cases closer than one seed standard deviation (of either preset, on its
    worst workload) are not told apart by the seeds: among those the best mean margin over the
    workloads decides, then the order of registration."""
    def worst(g: str) -> tuple[bool, float]:
        w, _, complete = _worst(margins[g], panels)
        return complete, -math.inf if w is None else w

    def noise(g: str) -> float:
        _, where, _ = _worst(margins[g], panels)
        return _noise(rows, g, where, adamw[where], metrics.get(where, DEFAULT_METRIC)) \
            if where in adamw else 0.0

    def mean(g: str) -> float:
        ms = [m for m in margins[g].values() if m is not None]
        return sum(ms) / len(ms) if ms else -math.inf

    top = max(margins, key=worst)
    ties = [g for g in margins if g != top and worst(g)[0] == worst(top)[0]
            and worst(top)[1] - worst(g)[1] <= max(noise(top), noise(g))]
    chosen = max([top, *ties], key=lambda g: (mean(g), -list(margins).index(g)))
    return chosen, [g for g in [top, *ties] if g != chosen]


def _missing(rows: Sequence[Row], expected: Collection[tuple[str, str]]) -> str:
    have = {(r.panel, r.group) for r in rows}
    gone: dict[str, list[str]] = {}
    for panel, group in sorted(set(expected) - have):
        gone.setdefault(panel, []).append(group)
    seeds = max((r.n for r in rows), default=0)
    short = [f"{r.label} ({r.n} of {seeds} seeds)" for r in rows if r.n < seeds]
    parts = [f"{p}: {', '.join(gs)}" for p, gs in gone.items()]
    if short:
        parts.append("fewer seeds: " + ", ".join(short))
    return ("Contestants without a finished run: " + "; ".join(parts) + ".") if parts else \
        "Every contestant has finished runs."


def _verdict_of(measured: Sequence[bool | None]) -> bool | None:
    """A target over several checks: failed if any failed, else unmeasured if any was."""
    if any(m is False for m in measured):
        return False
    return None if any(m is None for m in measured) or not measured else True


def bracket(rows: Sequence[Row], best_row: Row) -> str | None:
    """Why ``best_row`` (the best AdamW of its panel) may not be AdamW's best: ``None`` when a
    learning rate below and one above it were run on that panel, else which side is open (the
    grid's edge, or the next point not run), so that "≥ the tuned AdamW" is not claimed
    against an optimum the grid has not bracketed."""
    lrs = {r.x for r in rows if r.group == best_row.group and r.panel == best_row.panel
           and r.x is not None}
    x = best_row.x
    if x is None:
        return None
    sides = [side for side, ok in (("below", any(v < x for v in lrs)),
                                   ("above", any(v > x for v in lrs))) if not ok]
    return None if not sides else f"lr {x:g} has no run {' or '.join(sides)} it"


def _beats_adamw(rows: Sequence[Row], margins: Mapping[str, float | None],
                 adamw: Mapping[str, Row], panels: Sequence[str],
                 metrics: Mapping[str, tuple[str, bool]]) -> tuple[bool | None, str]:
    """Met on a panel when the margin is ≥ 0 and AdamW's best is bracketed by the runs; a
    non-negative margin against an unbracketed best is not measured (a loss stays a loss)."""
    parts, met = [], []
    for p in panels:
        m = margins.get(p)
        open_side = bracket(rows, adamw[p]) if p in adamw else None
        met.append(None if m is None or (m >= 0 and open_side) else m >= 0)
        if p in adamw:
            parts.append(f"{p} {_pct(m)} (AdamW lr {adamw[p].x:g}: "
                         f"{_value(adamw[p], metrics.get(p, DEFAULT_METRIC))}"
                         f"{f'; not bracketed: {open_side}' if open_side else ''})")
        else:
            parts.append(f"{p}: no AdamW run")
    return _verdict_of(met), ", ".join(parts)


def _beats_peers(rows: Sequence[Row], default: str, panels: Sequence[str],
                 metrics: Mapping[str, tuple[str, bool]]) -> tuple[bool | None, str]:
    behind, met = [], []
    for p in panels:
        metric = metrics.get(p, DEFAULT_METRIC)
        ours = best(rows, default, p, metric)
        for peer in LR_FREE_PEERS:
            theirs = best(rows, peer, p, metric)
            if ours is None or theirs is None:
                met.append(None)
                continue
            ok = error(ours, metric) <= error(theirs, metric)
            met.append(ok)
            if not ok:
                behind.append(f"{p}: {peer} {_value(theirs, metric)} vs "
                              f"{_value(ours, metric)}")
    text = ("behind " + "; ".join(behind)) if behind else "behind none"
    return _verdict_of(met), text


def _no_divergence(rows: Sequence[Row], default: str, panels: Sequence[str],
                   metrics: Mapping[str, tuple[str, bool]]) -> tuple[bool | None, str]:
    met, bad = [], []
    for p in panels:
        metric = metrics.get(p, DEFAULT_METRIC)
        row = best(rows, default, p, metric)
        met.append(None if row is None else math.isfinite(row.mean(metric[0])))
        if met[-1] is False:
            bad.append(p)
    return _verdict_of(met), ("diverged on " + ", ".join(bad)) if bad else \
        "no diverged seed among the runs found"


def _holds_long(margins: Mapping[str, float | None],
                reach: Mapping[str, Reach | None]) -> tuple[bool | None, str]:
    """The margin at each long horizon is not smaller than at its short one (the time to
    AdamW's result, ``reach``, is quoted beside it, not judged)."""
    met, parts = [], []
    for short, long in LONG_HORIZON:
        m_short, m_long = margins.get(short), margins.get(long)
        if m_short is None or m_long is None:
            met.append(None)
            parts.append(f"{long} vs {short}: not measured")
            continue
        met.append(m_long >= m_short)
        parts.append(f"{long} {_pct(m_long)} vs {short} {_pct(m_short)}")
    times = [f"{short} {format_reach(reach[short])} → {long} {format_reach(reach[long])}"
             for short, long in LONG_HORIZON if short in reach and long in reach]
    if times:
        parts.append("time to the best AdamW's result (fraction of the run): " +
                     ", ".join(times))
    return _verdict_of(met), ", ".join(parts)


def _trains_deep(rows: Sequence[Row], default: str) -> tuple[bool | None, str]:
    ours = best(rows, default, "fcn32")
    others = {g: best(rows, g, "fcn32") for g, _, _ in FIG1_DEFAULTS}
    text = ", ".join(f"{g} {_value(r, DEFAULT_METRIC)}" for g, r in
                     ((default, ours), *others.items()))
    if ours is None:
        return None, text
    acc = ours.mean("test_acc")
    fail = [g for g, r in others.items() if r is not None and not r.mean("test_acc") >= TRAINS]
    contrast = ("both PyTorch-default baselines fail" if len(fail) == len(others) else
                "not every PyTorch-default baseline fails, so Figure 1's contrast does not "
                "show here")
    return math.isfinite(acc) and acc >= TRAINS, f"{text}; {contrast}"


def _margin_table(margins: Mapping[str, Mapping[str, float | None]], adamw: Mapping[str, Row],
                  presets: Sequence[str], panels: Sequence[str], default: str, chosen: str,
                  metrics: Mapping[str, tuple[str, bool]]) -> list[str]:
    lines = ["| AGD preset | " + " | ".join(panels) + " | worst case |",
             "|---" * (len(panels) + 2) + "|"]
    for g in presets:
        worst, where, _ = _worst(margins.get(g, {}), panels)
        name = f"**{g}**" if g == chosen else g
        tags = [t for t, on in (("default", g == default), ("chosen", g == chosen)) if on]
        name += f" ({', '.join(tags)})" if tags else ""
        cells = [_pct(margins.get(g, {}).get(p)) for p in panels]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {_pct(worst)}{f' ({where})' if where else ''} |")
    best_cells = [f"{_value(adamw[p], metrics.get(p, DEFAULT_METRIC))} (lr {adamw[p].x:g})"
                  if p in adamw else "missing" for p in panels]
    return lines + ["| best AdamW of the grid | " + " | ".join(best_cells) + " | |"]


def judge(rows: Sequence[Row], expected: Sequence[tuple[str, str]], *,
          presets: Sequence[str] = PRESET_GROUPS, default: str = DEFAULT_GROUP,
          metrics: Mapping[str, tuple[str, bool]] = METRICS) -> Verdict:
    """Margins of every preset to the best AdamW, the preset with the best worst case, and the
    issues' five targets for ``default`` (yes = all met, no = none, partly otherwise).

    Margin on a workload = (err_AdamW − err_preset) / err_AdamW, err = 1 − test accuracy or the
    test loss (:func:`margin`), each the best row of its group (mean over seeds). ``expected``
    lists the (panel, group) pairs of the plan; those without rows are named as missing.
    The chosen preset is the one with the largest worst case among those measured on every
    workload, where worst cases within one seed standard deviation are ties broken by the mean
    margin (:func:`_choose`); a diverged preset's margin is ``-inf``.
    """
    panels = list(dict.fromkeys([p for p, _ in expected] + [r.panel for r in rows]))
    margins, adamw = _margins(rows, presets, panels, metrics)
    if not margins:
        return Verdict("n/a", "not measured: no workload has both an AGD preset and AdamW. " +
                       _missing(rows, expected))
    chosen, tied = _choose(rows, margins, adamw, panels, metrics)
    reach = time_to_result(rows, default, adamw, panels, metrics)
    worst, where, complete = _worst(margins[chosen], panels)
    lines = [f"{g} " + ", ".join(f"{p} {_pct(m)}" for p, m in margins[g].items()) +
             f" (worst {_pct(_worst(margins[g], panels)[0])})" for g in presets if g in margins]
    text = ("Margin of each AGD preset to the best AdamW of the grid (relative reduction of the "
            "error, 1 − test accuracy or the GPT's test loss in nats; + = AGD better): " +
            "; ".join(lines) + f". The race chooses {chosen} (best worst-case margin "
            f"{_pct(worst)}, on {where}" + ("" if complete else "; not every workload measured")
            + (f"; within one seed std of {', '.join(tied)}, so the best mean margin decides"
               if tied else "") + ").")
    targets = [("≥ the best AdamW on every workload", *_beats_adamw(
                    rows, margins.get(default, {}), adamw, panels, metrics)),
               ("≥ every learning-rate-free peer", *_beats_peers(rows, default, panels,
                                                                  metrics)),
               ("the margin at the long horizon ≥ at the short",
                *_holds_long(margins.get(default, {}), reach)),
               ("no divergence on any workload or seed", *_no_divergence(rows, default, panels,
                                                                          metrics)),
               ("fcn32 trains (≥ 50%) where the PyTorch defaults do not",
                *_trains_deep(rows, default))]
    said = {True: "met", False: "NOT met", None: "not measured"}
    text += f" Targets for the default {default}: " + "; ".join(
        f"{name}: {said[ok]} ({why})" for name, ok, why in targets) + ". "
    text += _missing(rows, expected)
    oks = [ok for _, ok, _ in targets]
    status = "yes" if all(o is True for o in oks) else (
        "no" if not any(o is True for o in oks) else "partly")
    details = (*_margin_table(margins, adamw, presets, panels, default, chosen, metrics), "",
               *(f"- {name}: **{said[ok]}** — {why}" for name, ok, why in targets),
               f"- time to the best AdamW's result (not a target; `hyperfree.experiments."
               f"time_to_result`): the fraction of its run at which {default}'s test curve, mean "
               f"over seeds, first reaches the best AdamW's final number — "
               f"{describe_time_to_result(reach)}")
    return Verdict(status, text, details)

