"""The report's PNG figures, one per experiment, drawn from collected runs (no pyplot state).

Kinds (``Experiment.figure``):

* ``curves`` — per label (mean over seeds): test accuracy, training objective and relative
  update size ‖ΔW‖/‖W‖ against the epoch.
* ``sweep`` — per panel: final test accuracy and objective against ``x`` (one line per group;
  groups without ``x`` are horizontal dashed lines), and the relative update per epoch of each
  group's best run.
* ``heatmap`` — final test accuracy and objective over ``x`` (columns) × ``y`` (rows).
* ``bars`` — per panel: each group's best final test accuracy, ± std over seeds; one panel's
  figure (an experiment page's) adds the metric per record of each group's best run and the
  step size η per record of every run that reports one (AGD; DoG reports its own).

"Test accuracy" is the panel's metric (``Experiment.metric``): a panel judged by ``test_loss``
shows the test loss instead, and "best" means lowest there.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ._spec import Experiment, Row
from ._verdicts import best
from .collect import RunResult

__all__ = ["draw_figure", "mean_curve"]


def mean_curve(runs: Sequence[RunResult], label: str, key: str) -> tuple[list[int], list[float]]:
    """Epochs and the seed-mean of ``key`` per epoch for ``label`` (epochs all seeds have)."""
    series = [[r.get(key) for r in run.records] for run in runs if run.info["label"] == label]
    n = min((len(s) for s in series), default=0)
    xs, ys = [], []
    for i in range(n):
        vals = [s[i] for s in series if s[i] is not None]
        if vals:
            xs.append(i + 1)
            ys.append(sum(float(v) for v in vals) / len(vals))
    return xs, ys


def _new(rows: int, cols: int) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_if_positive(ax: Any, values: Sequence[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite and all(v > 0 for v in finite):
        ax.set_yscale("log")


_TITLES = {"test_acc": "test accuracy", "test_loss": "test loss", "train_acc": "train accuracy",
           "train_loss": "training objective"}


def _curves(fig_axes: Any, runs: Sequence[RunResult], rows: Sequence[Row],
            exp: Experiment) -> None:
    axes = fig_axes[1][0]
    metric = exp.metric("")[0]
    keys = [(metric, _TITLES[metric]), ("train_loss", "training objective"),
            ("rel_update", "‖ΔW‖ / ‖W‖ (mean over the epoch)")]
    for ax, (key, title) in zip(axes, keys):
        values: list[float] = []
        for row in rows:
            xs, ys = mean_curve(runs, row.label, key)
            values += ys
            ax.plot(xs, ys, marker="o", ms=3, label=row.label)
        if key != "test_acc":
            _log_if_positive(ax, values)
        ax.set(title=title, xlabel="epoch")
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")


def _sweep(fig_axes: Any, runs: Sequence[RunResult], rows: Sequence[Row], exp: Experiment,
           panels: list[str]) -> None:
    axes = fig_axes[1]
    if len(panels) == 1:  # one panel: lay its three plots out in a row
        axes = [[ax] for ax in axes[0]]
    colour = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(r.group for r in rows))}
    for col, panel in enumerate(panels):
        prow = [r for r in rows if r.panel == panel]
        groups = list(dict.fromkeys(r.group for r in prow))
        metric = exp.metric(panel)
        for i, (key, title) in enumerate(((metric[0], f"final {_TITLES[metric[0]]}"),
                                          ("train_loss", "final training objective"))):
            ax, values = axes[i][col], []
            for g in groups:
                pts = sorted((r.x, r.mean(key)) for r in prow if r.group == g and r.x is not None)
                fixed = [r.mean(key) for r in prow if r.group == g and r.x is None]
                values += [p[1] for p in pts] + fixed
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=g,
                            color=colour[g])
                for v in fixed:
                    ax.axhline(v, ls="--", color=colour[g], label=f"{g} (no tuning)")
            if exp.log_x:
                ax.set_xscale("log")
            if key == "train_loss":
                _log_if_positive(ax, values)
            ax.set(title=f"{panel + ': ' if panel else ''}{title}", xlabel=exp.x_label)
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize="small")
        ax = axes[2][col]
        _best_curves(ax, runs, prow, groups, colour, metric, "rel_update")
        ax.set(title="‖ΔW‖/‖W‖ per epoch (best of each group)", xlabel="epoch")
        _integer_ticks(ax)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
        _etas(axes[3][col], runs, prow, groups, colour)


def _best_curves(ax: Any, runs: Sequence[RunResult], rows: Sequence[Row], groups: Sequence[str],
                 colour: dict[str, str], metric: tuple[str, bool], key: str) -> list[float]:
    """Plot ``key`` per record (seed mean) of the best run (by ``metric``) of each group of
    ``groups``; return the values drawn."""
    values: list[float] = []
    for g in groups:
        top = best(rows, g, metric=metric)
        if top is not None:
            xs, ys = mean_curve(runs, top.label, key)
            values += ys
            ax.plot(xs, ys, marker="o", ms=3, label=top.label, color=colour[g])
    return values


def _etas(ax: Any, runs: Sequence[RunResult], rows: Sequence[Row], groups: Sequence[str],
          colour: dict[str, str]) -> None:
    """The step size η per record (its mean over the record's steps, seed-mean), for every
    group whose runs report one."""
    values: list[float] = []
    for g in groups:
        for r in (r for r in rows if r.group == g and r.x is None):
            xs, ys = mean_curve(runs, r.label, "eta_mean")
            if ys:
                ax.plot(xs, ys, marker="o", ms=3, label=r.label, color=colour[g])
                values += ys
    _log_if_positive(ax, values)  # DoG's η and AGD's differ by orders of magnitude
    drawn = bool(values)
    ax.set(title="step size η per record (its steps' mean)", xlabel="record")
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize="x-small")


def _heatmap(fig_axes: Any, rows: Sequence[Row], exp: Experiment) -> None:
    xs = sorted({r.x for r in rows if r.x is not None})
    ys = sorted({r.y for r in rows if r.y is not None})
    fig, axes = fig_axes
    metric = exp.metric("")[0]
    for ax, (key, title, cmap) in zip(axes[0], ((metric, f"final {_TITLES[metric]}", "viridis"),
                                                ("train_loss", "final training objective",
                                                 "magma_r"))):
        grid = [[math.nan] * len(xs) for _ in ys]
        for r in rows:
            if r.x in xs and r.y in ys:
                grid[ys.index(r.y)][xs.index(r.x)] = r.mean(key)
        im = ax.imshow(grid, origin="lower", cmap=cmap, aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if math.isfinite(v):
                    text = f"{100 * v:.1f}" if key.endswith("_acc") else f"{v:.3g}"
                    dark = im.norm(v) < 0.5 if cmap == "viridis" else im.norm(v) > 0.5
                    ax.text(j, i, text, ha="center", va="center", fontsize="small",
                            color="w" if dark else "k")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        ax.set(title=title, xlabel=exp.x_label, ylabel=exp.y_label)
        fig.colorbar(im, ax=ax)


def _bars(fig_axes: Any, rows: Sequence[Row], panels: list[str], exp: Experiment) -> None:
    """Best row of each group (AGD red, tuned grids grey): its mean metric ± std over seeds."""
    for ax, panel in zip(fig_axes[1][0], panels):
        key, higher = exp.metric(panel)
        pct = key.endswith("_acc")
        prow = [r for r in rows if r.panel == panel]
        groups = list(dict.fromkeys(r.group for r in prow))
        grids = {r.group for r in prow if r.x is not None}
        tops = [best(prow, g, metric=(key, higher)) for g in groups]
        means = [t.mean(key) if t else math.nan for t in tops]
        stds = [t.metrics.get(key, (0, 0))[1] if t else 0 for t in tops]
        colors = ["C3" if g.startswith("agd") else ("C7" if g in grids else "C0")
                  for g in groups]
        ax.barh(range(len(groups)), means, xerr=stds, color=colors)
        ax.set_yticks(range(len(groups)), groups)
        ax.invert_yaxis()
        for i, m in enumerate(means):
            if math.isfinite(m):
                ax.text(m, i, f" {100 * m:.1f}%" if pct else f" {m:.3g}", va="center",
                        fontsize="small")
            else:
                ax.text(0, i, " diverged", va="center", fontsize="small", color="C3")
        finite = [m for m in means if math.isfinite(m)]
        right = 1.15 if pct else 1.3 * max(finite, default=1.0)
        title = f"{panel}: final {_TITLES[key]}" + ("" if higher else " (lower is better)")
        ax.set(title=title, xlim=(0, right))
        ax.grid(alpha=0.3, axis="x")


def _trajectories(axes: Any, runs: Sequence[RunResult], rows: Sequence[Row], exp: Experiment,
                  panel: str) -> None:
    """The panel's metric per record for the best run of each group, and η per record."""
    key, higher = exp.metric(panel)
    groups = list(dict.fromkeys(r.group for r in rows))
    colour = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    ax = axes[0]
    values = _best_curves(ax, runs, rows, groups, colour, (key, higher), key)
    if key.endswith("loss"):
        _log_if_positive(ax, values)
    ax.set(title=f"{_TITLES[key]} per record (best per group)", xlabel="record")
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="xx-small")
    _etas(axes[1], runs, rows, groups, colour)


def draw_figure(exp: Experiment, runs: Sequence[RunResult], rows: Sequence[Row],
                out_file: str | Path, *, panel: str | None = None) -> Path:
    """Draw ``exp``'s figure of ``rows`` (and the per-epoch ``runs``) into PNG ``out_file``;
    with ``panel``, only that panel's rows (an experiment page's per-panel figure)."""
    if panel is not None:
        rows = [r for r in rows if r.panel == panel]
    if not rows:
        raise ValueError(f"no finished runs of {exp.name!r} to draw; run "
                         f"`hyperfree experiment {exp.name}` first")
    panels = list(dict.fromkeys(r.panel for r in rows))
    if exp.figure == "curves":
        fig_axes = _new(1, 3)
        _curves(fig_axes, runs, rows, exp)
    elif exp.figure == "sweep":
        fig_axes = _new(1, 4) if len(panels) == 1 else _new(4, len(panels))
        _sweep(fig_axes, runs, rows, exp, panels)
    elif exp.figure == "heatmap":
        fig_axes = _new(1, 2)
        _heatmap(fig_axes, rows, exp)
    elif panel is not None:  # one panel of a bars experiment (a page's figure): + trajectories
        fig_axes = _new(1, 3)
        _bars(fig_axes, rows, panels, exp)
        _trajectories(fig_axes[1][0][1:], runs, rows, exp, panel)
    else:
        fig_axes = _new(1, len(panels))
        _bars(fig_axes, rows, panels, exp)
    fig_axes[0].suptitle(exp.title if panel is None else f"{exp.title}: {panel}")
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_axes[0].savefig(out, dpi=90)
    return out
