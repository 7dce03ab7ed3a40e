"""An experiment's own page (``Experiment.page``): ``<name>.md`` beside the results report.

Above the panels: the experiment's header (claim, verdict, command, machine, wall time, as in
the results report), the verdict's details and the runs of the plan that are missing or
diverged. Then per panel: its figure (best of each group, ± std over seeds), the metric it is
judged by, the compute of each grid (a group swept over ``x``) in units of one run of
``Experiment.cost_unit`` (:func:`grid_cost`), and a table of every run with the panel's
metric as mean ± std over seeds, each grid's best point marked.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from ._spec import PROFILE_SEEDS, Experiment, Row
from ._verdicts import best
from .collect import RunResult
from .figures import draw_figure

__all__ = ["grid_cost", "missing_runs", "panel_table", "render_page"]

_NAMES = {"test_acc": "test accuracy", "test_loss": "test loss in nats",
          "train_acc": "train accuracy", "train_loss": "training objective"}


def grid_cost(rows: Sequence[Row], group: str, unit: str, panel: str | None = None
              ) -> float | None:
    """The compute of ``group``'s grid in units of one ``unit`` run: the sum over the grid's
    rows of their mean wall time per seed, over the mean wall time per seed of ``unit``'s row
    (in ``panel``). ``None`` if either is missing or the unit took no time."""
    def of(g: str) -> list[Row]:
        return [r for r in rows if r.group == g and (panel is None or r.panel == panel)]

    grid, base = of(group), of(unit)
    if not grid or not base or base[0].seconds <= 0:
        return None
    return sum(r.seconds for r in grid) / base[0].seconds


def missing_runs(exp: Experiment, profile: str, runs: Sequence[RunResult]) -> list[str]:
    """``label seed k`` of every run of ``exp``'s ``profile`` plan without a finished run (the
    profile's seeds, or more if more were run)."""
    have = {(str(r.info["label"]), int(r.info.get("seed", 0))) for r in runs}
    seeds = max([PROFILE_SEEDS[profile], *(s + 1 for _, s in have)])
    return [f"{spec.label} seed {k}" for spec in exp.runs.get(profile, ())
            for k in range(seeds) if (spec.label, k) not in have]


def _cell(row: Row, key: str) -> str:
    if key not in row.metrics:
        return "—"
    mean, std = row.metrics[key]
    if not math.isfinite(mean):
        return "diverged"
    if key.endswith("_acc"):
        return f"{100 * mean:.1f} ± {100 * std:.1f}%"
    return f"{mean:.4g} ± {std:.2g}"


def panel_table(rows: Sequence[Row], exp: Experiment, panel: str) -> list[str]:
    """Markdown table of ``panel``'s rows: the panel's metric and the training objective
    (mean ± std over seeds), seeds, wall time; the best point of each grid in bold."""
    key, higher = exp.metric(panel)
    prow = [r for r in rows if r.panel == panel]
    grids = {r.group for r in prow if r.x is not None}
    tops = {r.label for r in (best(prow, g, metric=(key, higher)) for g in grids) if r}
    x_name = exp.x_label or "x"
    lines = [f"| run | group | {x_name} | seeds | {_NAMES[key]} | training objective "
             "| s / run |", "|---|---|---|---|---|---|---|"]
    for r in prow:
        mark = r.label in tops and math.isfinite(r.mean(key))
        value = f"**{_cell(r, key)}** (best)" if mark else _cell(r, key)
        x = "—" if r.x is None else f"{r.x:g}"
        lines.append(f"| {r.label} | {r.group} | {x} | {r.n} | {value} "
                     f"| {_cell(r, 'train_loss')} | {r.seconds:.1f} |")
    return lines


def _costs(rows: Sequence[Row], exp: Experiment, panel: str) -> str:
    if exp.cost_unit is None:
        return ""
    prow = [r for r in rows if r.panel == panel]
    parts = []
    for g in dict.fromkeys(r.group for r in prow if r.x is not None):
        cost = grid_cost(prow, g, exp.cost_unit)
        n = sum(r.group == g for r in prow)
        parts.append(f"{g} grid ({n} points) {'—' if cost is None else f'{cost:.1f}'}")
    if not parts:
        return ""
    return (f"**Compute of each grid** in units of one {exp.cost_unit} run (sum of the grid's "
            f"wall times per seed / that run's): " + "; ".join(parts) + ".")


def _diverged(runs: Sequence[RunResult]) -> list[str]:
    return [f"- {r.info['label']} seed {r.info.get('seed', 0)}: {r.info['diverged']}"
            for r in runs if r.info.get("diverged")]


def render_page(exp: Experiment, profile: str, runs: Sequence[RunResult], rows: Sequence[Row],
                header: Sequence[str], figures_dir: Path, md_dir: Path) -> list[str]:
    """The page's Markdown lines; draws one PNG per panel, ``<name>-<panel>.png``."""
    verdict = exp.verdict(rows)
    missing = missing_runs(exp, profile, runs)
    lines = [*header, *verdict.details, ""]
    lines += [f"**Missing runs of the `{profile}` plan** ({len(missing)}): " +
              (", ".join(missing) if missing else "none, every run finished") + ".", ""]
    diverged = _diverged(runs)
    lines += (["**Diverged runs** (recorded by the runner; shown as \"diverged\"):", "",
               *diverged, ""] if diverged else ["**Diverged runs:** none.", ""])
    for panel in dict.fromkeys(r.panel for r in rows):
        key, higher = exp.metric(panel)
        fig = draw_figure(exp, runs, rows, figures_dir / f"{exp.name}-{panel}.png",
                          panel=panel)
        lines += [f"## {panel}", "",
                  f"Judged by the final {_NAMES[key]} ({'higher' if higher else 'lower'} is "
                  "better).", "",
                  f"![{exp.name} {panel}]({os.path.relpath(fig, md_dir)})", ""]
        cost = _costs(rows, exp, panel)
        lines += [cost, ""] if cost else []
        lines += [*panel_table(rows, exp, panel), ""]
    return lines
