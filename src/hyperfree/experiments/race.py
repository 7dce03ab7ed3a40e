"""The race (issues 9, 17): every AGD preset, untuned, against tuned AdamW and SGD and the
learning-rate-free peers at their defaults, on seven workloads; and the race's verdict.

Workloads (panels; Fashion-MNIST at batch 128 and square loss unless said):

.. code-block:: text

    fcn16      fcn depth 16 x width 512                 quick 2 epochs  full 5   gpu 10
    fcn32      fcn depth 32 x width 256 (AGD Figure 1)  quick 2 epochs  full 5   gpu 10
    conv       resnet_small (depth 1, width 16)         quick 2 epochs
               resnet18 (width 64)                                      full 2   gpu 6
    conv-long  the same network, 4x the epochs          quick 8 epochs  full 8   gpu 24
    gpt        gpt depth 4, width 128, 4 heads, context 64, batch 12, tinyshakespeare,
               cross-entropy, judged by test_loss (nats, whole test split)
                                                        quick 500 steps full 2000 gpu 2000
    gpt-long   the same GPT, 4x the steps               quick 2000      full 8000 gpu 8000
    lstm       char_lstm depth 2, width 256, context 64, batch 32, tinyshakespeare, judged
               by test_loss                              quick 1000 steps full 3000 gpu 3000
    finetune   the conv network trained by AdamW (lr 1e-3, cosine, 5% warmup) on classes 0-4
               for 2 epochs (run ``finetune-pretrain``, seed by seed), then trained on
               classes 5-9 from those weights (``--init-from``)  quick 2 epochs (each)

Contestants on every workload: ``agd-<preset>`` for every preset of
:data:`hyperfree.optim.PRESETS` (the presets are read at import, so a new preset joins by
itself; plain ``agd`` and ``agd-auto`` are the same builder as ``agd-<DEFAULT_PRESET>`` and
are not run twice); ``adamw`` over the half-decade grid :data:`ADAMW_GRID` (the conv workloads add
0.3 above it, because the best sat on 0.1; fine-tuning spans :data:`FINETUNE_GRID`, as its
users do) and ``sgd`` (momentum 0.9) over :data:`SGD_GRID`, both with ``--schedule cosine
--warmup-steps W``, ``W`` = 5% of the run's optimiser steps, AdamW with weight decay 0.01
(torch's default) on images and, as language-model users set it, weight decay 0.1 and gradient
clipping at norm 1 on text; the peers of :data:`PEERS` at their defaults; on ``fcn32`` also the
Figure 1 baselines at PyTorch defaults (``adam-default``: Adam 1e-3, ``sgd-default``: SGD 0.1,
constant, no momentum). Profiles ``quick`` (1 seed), ``full`` and ``gpu`` (3 seeds); ``smoke``
is ``smoke_of(quick)`` with the FCNs at width 64 (tests). Not in ``hyperfree experiment all``
(``in_all=False``). On the 2-core CPU the quick plan runs the grids on 1 seed and then the
AGD presets, the best grid points and the peers on 3 (``--seeds 3 --only PATTERN``;
``docs/race.md`` has the commands and the wall time).

The verdict (:func:`race_verdict`) is a pure function of the aggregated rows: each preset's
margin to the best AdamW of the grid (:func:`margin`), its worst case over the workloads, the
preset the race chooses (best worst case), and the issues' targets for the current default
(:data:`LONG_HORIZON`: the margin at the long horizon is not smaller than at the short).
"""
from __future__ import annotations

import math
from typing import Any, Collection, Mapping, Sequence

from hyperfree.optim import DEFAULT_PRESET, PRESETS

from hyperfree.train.transfer import parse_classes

from ._spec import DEFAULT_METRIC, Experiment, Row, RunSpec, Verdict, register_experiment
from ._verdicts import TRAINS, best
from .suite import profiles
from .time_to_result import Reach, describe_time_to_result, format_reach, time_to_result

__all__ = ["ADAMW_GRID", "FINETUNE_GRID", "SGD_GRID", "PEERS", "LR_FREE_PEERS", "FIG1_DEFAULTS",
           "WARMUP_FRACTION", "PRESET_GROUPS", "DEFAULT_GROUP", "METRICS", "EXPECTED",
           "LONG_HORIZON", "warmup_steps", "race_specs", "error", "margin", "race_verdict"]

#: AdamW's learning rates: half-decades, so that the best is not between two points a decade
#: apart (the conv workloads add 0.3: their best sat on 0.1)
ADAMW_GRID: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: fine-tuning's learning rates, as its users span them
FINETUNE_GRID: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
SGD_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
#: the peers at their documented defaults (no flags)
PEERS: tuple[str, ...] = ("schedulefree-adamw", "prodigy", "dadapt-adam", "dog", "muon")
#: the peers the issue's target "≥ every learning-rate-free peer" compares with (Muon has an lr)
LR_FREE_PEERS: tuple[str, ...] = ("schedulefree-adamw", "prodigy", "dadapt-adam", "dog")
#: group, optimiser, lr: the AGD paper's Figure 1 baselines at PyTorch defaults (fcn32 only)
FIG1_DEFAULTS: tuple[tuple[str, str, float], ...] = (("adam-default", "adam", 1e-3),
                                                     ("sgd-default", "sgd", 0.1))
WARMUP_FRACTION = 0.05
PRESET_GROUPS: tuple[str, ...] = tuple(f"agd-{name}" for name in PRESETS)
DEFAULT_GROUP = f"agd-{DEFAULT_PRESET}"
METRICS: Mapping[str, tuple[str, bool]] = {p: ("test_loss", False)
                                           for p in ("gpt", "gpt-long", "lstm")}
#: (short, long) workloads whose margins the verdict compares: the long one's must not be smaller
LONG_HORIZON: tuple[tuple[str, str], ...] = (("conv", "conv-long"), ("gpt", "gpt-long"))
_FASHION_MNIST_TRAIN = 60_000  # training images; batches per epoch = ceil(60000 / batch)
_BS = 128
_TEXT_ADAMW = {"weight_decay": 0.1, "clip_grad_norm": 1.0}  # nanoGPT's, and most LM recipes'
_PRETRAIN = "finetune-pretrain"


# ---------------------------------------------------------------- the runs
def warmup_steps(overrides: Mapping[str, Any]) -> int:
    """``W``: :data:`WARMUP_FRACTION` of the run's optimiser steps (``steps``, else ``epochs``
    × ceil(n / ``train_bs``) with n the Fashion-MNIST training images of its ``classes``),
    rounded half up, at least 1."""
    total = overrides.get("steps")
    if total is None:
        n = _FASHION_MNIST_TRAIN
        if overrides.get("classes") is not None:
            n = n * len(parse_classes(overrides["classes"], 10)) // 10
        per_epoch = math.ceil(n / int(overrides.get("train_bs", _BS)))
        total = int(overrides["epochs"]) * per_epoch
    return max(1, int(WARMUP_FRACTION * int(total) + 0.5))


def _contestants(panel: str, base: Mapping[str, Any], grid: Sequence[float],
                 adamw: Mapping[str, Any]) -> list[RunSpec]:
    sched = {"schedule": "cosine", "warmup_steps": warmup_steps(base)}
    out = [RunSpec(f"{panel}-{g}", g, {**base, "optimizer": g}, panel=panel)
           for g in PRESET_GROUPS]
    out += [RunSpec(f"{panel}-adamw-lr{lr:g}", "adamw",
                    {**base, **sched, **adamw, "optimizer": "adamw", "lr": lr}, x=lr,
                    panel=panel) for lr in grid]
    out += [RunSpec(f"{panel}-sgd-lr{lr:g}", "sgd",
                    {**base, **sched, "optimizer": "sgd", "lr": lr, "momentum": 0.9}, x=lr,
                    panel=panel) for lr in SGD_GRID]
    out += [RunSpec(f"{panel}-{p}", p, {**base, "optimizer": p}, panel=panel) for p in PEERS]
    if panel == "fcn32":
        out += [RunSpec(f"{panel}-{g}", g, {**base, "optimizer": opt, "lr": lr}, panel=panel)
                for g, opt, lr in FIG1_DEFAULTS]
    return out


def _finetune(conv: Mapping[str, Any]) -> list[RunSpec]:
    """The pre-training run (AdamW on classes 0-4) and the contestants on classes 5-9."""
    pre = {**conv, "classes": "0-4"}
    pretrain = RunSpec(_PRETRAIN, "pretrain",
                       {**pre, "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine",
                        "warmup_steps": warmup_steps(pre)}, panel="finetune")
    base = {**conv, "classes": "5-9", "init_from": f"@{_PRETRAIN}"}
    return [pretrain, *_contestants("finetune", base, FINETUNE_GRID, {})]


def race_specs(fcn_epochs: int, conv: Mapping[str, Any], gpt_steps: int, lstm_steps: int
               ) -> tuple[RunSpec, ...]:
    """Every contestant on the seven workloads, workload by workload."""
    fm = {"dataset": "fashion-mnist"}
    text = {"dataset": "tinyshakespeare"}
    gpt = {"arch": "gpt", **text, "depth": 4, "width": 128, "heads": 4, "seq_len": 64,
           "train_bs": 12}
    conv = {**fm, **conv}
    workloads = (
        ("fcn16", {"arch": "fcn", **fm, "depth": 16, "width": 512, "epochs": fcn_epochs},
         ADAMW_GRID, {}),
        ("fcn32", {"arch": "fcn", **fm, "depth": 32, "width": 256, "epochs": fcn_epochs},
         ADAMW_GRID, {}),
        ("conv", conv, (*ADAMW_GRID, 0.3), {}),
        ("conv-long", {**conv, "epochs": 4 * conv["epochs"]}, (*ADAMW_GRID, 0.3), {}),
        ("gpt", {**gpt, "steps": gpt_steps}, ADAMW_GRID, _TEXT_ADAMW),
        ("gpt-long", {**gpt, "steps": 4 * gpt_steps}, ADAMW_GRID, _TEXT_ADAMW),
        ("lstm", {"arch": "char_lstm", **text, "depth": 2, "width": 256, "seq_len": 64,
                  "train_bs": 32, "steps": lstm_steps}, ADAMW_GRID, _TEXT_ADAMW))
    specs = [s for panel, base, grid, adamw in workloads
             for s in _contestants(panel, base, grid, adamw)]
    return tuple(specs + _finetune(conv))


def _narrow(specs: tuple[RunSpec, ...]) -> tuple[RunSpec, ...]:
    """The smoke runs with the FCNs at width 64: the wiring is the same, and AGD's orthogonal
    initialisation of sixteen 512 x 512 matrices alone took 0.5 s a run."""
    return tuple(RunSpec(s.label, s.group, {**s.overrides, "width": 64}, s.x, s.y, s.panel)
                 if s.overrides.get("arch") == "fcn" else s for s in specs)


_SMALL_CONV = {"arch": "resnet_small", "depth": 1, "width": 16, "epochs": 2}
_RESNET18 = {"arch": "resnet18", "width": 64}
_RUNS = profiles(race_specs(2, _SMALL_CONV, 500, 1000),
                 race_specs(5, {**_RESNET18, "epochs": 2}, 2000, 3000),
                 race_specs(10, {**_RESNET18, "epochs": 6}, 2000, 3000))
_RUNS["smoke"] = _narrow(_RUNS["smoke"])
#: (panel, group) of every contestant, in plan order: what the verdict expects to find
EXPECTED: tuple[tuple[str, str], ...] = tuple(dict.fromkeys((s.panel, s.group)
                                                            for s in _RUNS["quick"]
                                                            if s.group != "pretrain"))


# ---------------------------------------------------------------- the verdict
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


def _beats_adamw(margins: Mapping[str, float | None], adamw: Mapping[str, Row],
                 panels: Sequence[str], metrics: Mapping[str, tuple[str, bool]]
                 ) -> tuple[bool | None, str]:
    parts, met = [], []
    for p in panels:
        m = margins.get(p)
        met.append(None if m is None else m >= 0)
        if p in adamw:
            parts.append(f"{p} {_pct(m)} (AdamW lr {adamw[p].x:g}: "
                         f"{_value(adamw[p], metrics.get(p, DEFAULT_METRIC))})")
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


def race_verdict(rows: Sequence[Row], *, presets: Sequence[str] = PRESET_GROUPS,
                 default: str = DEFAULT_GROUP,
                 metrics: Mapping[str, tuple[str, bool]] = METRICS,
                 expected: Sequence[tuple[str, str]] = EXPECTED) -> Verdict:
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
                    margins.get(default, {}), adamw, panels, metrics)),
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


register_experiment(Experiment(
    name="race", title="The race: every AGD preset, untuned, vs tuned AdamW/SGD and the "
                       "learning-rate-free peers",
    claim="Issues 9 and 17's targets: the default AGD, with no tuning, is at least as good as "
          "AdamW tuned over a half-decade learning-rate grid (cosine schedule, 5% warmup, "
          "weight decay and clipping as its users set them) on every workload (mean over "
          "seeds), at least as good as every learning-rate-free peer at its defaults, keeps "
          "its margin at the long horizon (conv-long, gpt-long), never diverges, and trains "
          "the 32-layer FCN where Adam 1e-3 and SGD 0.1 at PyTorch defaults do not. The race "
          "also chooses the default: the preset with the best worst-case margin to the tuned "
          "AdamW.",
    figure="bars", verdict=race_verdict, x_label="learning rate", log_x=True,
    runs=_RUNS, metrics=METRICS, in_all=False, page=True, cost_unit=DEFAULT_GROUP,
    notes="Fashion-MNIST (square loss, batch 128) for fcn16 (16 x 512), fcn32 (32 x 256), "
          "conv and conv-long; finetune: the conv network pre-trained by AdamW on classes 0-4, "
          "then trained on classes 5-9; the GPT (depth 4, width 128, 4 heads, context 64, "
          "batch 12) and the char LSTM (depth 2, width 256, context 64, batch 32) on "
          "tinyshakespeare with cross-entropy, judged by the test loss in nats on the whole "
          "test split. AdamW lr in {1e-5, 3e-5, ..., 1e-1} (conv: also 0.3; finetune: "
          "{1e-5, ..., 1e-3}), weight decay 0.01 (text: 0.1 and clipping at norm 1); SGD "
          "momentum 0.9 lr in {1e-3, 1e-2, 1e-1}; both cosine with W = 5% of the run's steps "
          "of linear warmup; peers at their defaults. quick: FCNs, resnet_small (depth 1, "
          "width 16) and finetune 2 epochs, conv-long 8, GPT 500 steps, gpt-long 2000, LSTM "
          "1000, 1 seed; full: FCNs 5 epochs, resnet18 (width 64) 2 epochs (long 8), GPT 2000 "
          "steps (long 8000), LSTM 3000, 3 seeds; gpu: FCNs 10 epochs, resnet18 6 (long 24), "
          "GPT 2000 (long 8000), LSTM 3000, 3 seeds. Not part of `hyperfree experiment all`: "
          "run it by name."))
