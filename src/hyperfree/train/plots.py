"""Figures in the style of the AGD paper's Figure 4 (Bernstein et al. 2023, arXiv 2304.05187).

One row of panels against the epoch: one per scalar the stepper logged (mean over the epoch's
steps, with the min–max band; for AGD that is the automatic learning rate η), the relative
update size ‖ΔW‖/‖W‖ (the paper's Figure 5) when recorded, the training objective, and train
(solid) and test (dashed) accuracy. The x-axis is the optimiser step instead when a run is
counted in steps (its ``config.json`` has ``steps``; it records every ``eval_every`` steps), so
step-counted runs overlay on the unit they were run in. Points are marked while a curve has
few of them, so a run with a single record still shows. Several runs overlay, each labelled by
its directory name. Uses matplotlib's Agg canvas directly (no pyplot state, no display
needed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .record import read_config, read_metrics

__all__ = ["scalar_keys", "x_key", "plot_runs", "draw_runs"]


_TITLES = {"eta": "η (AGD's automatic step)", "train_loss": "train objective",
           "accuracy": "accuracy (solid train, dashed test)", "rel_update": "‖ΔW‖ / ‖W‖"}


def scalar_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """The stepper scalars ``k`` that have ``k_mean`` in the records, in first-seen order."""
    keys: list[str] = []
    for rec in records:
        for name in rec:
            if name.endswith("_mean") and name[:-5] not in keys:
                keys.append(name[:-5])
    return keys


_MARKED = 30  # curves with fewer points than this get markers


def x_key(run_dirs: Sequence[str | os.PathLike[str]]) -> str:
    """``"step"`` if any of the runs is counted in steps (``config.json``), else ``"epoch"``."""
    for d in run_dirs:
        try:
            if read_config(d).get("steps") is not None:
                return "step"
        except (FileNotFoundError, ValueError):
            continue
    return "epoch"


def _series(records: Sequence[dict[str, Any]], key: str, x: str = "epoch"
            ) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(run_dirs: Sequence[str | os.PathLike[str]], out_file: str | os.PathLike[str],
              *, labels: Sequence[str] | None = None) -> Path:
    """Draw the runs in ``run_dirs`` into the PNG ``out_file``; returns its path.

    Raises FileNotFoundError if a directory has no ``metrics.jsonl`` and ValueError if no run has
    anything recorded.
    """
    fig = draw_runs(run_dirs, labels=labels)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def draw_runs(run_dirs: Sequence[str | os.PathLike[str]], *,
              labels: Sequence[str] | None = None) -> Any:
    """The matplotlib ``Figure`` of :func:`plot_runs` (not saved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = [(Path(d), read_metrics(d)) for d in run_dirs]
    if not any(recs for _, recs in runs):
        raise ValueError(f"no epochs recorded in {', '.join(str(d) for d in run_dirs)}; "
                         "train at least one epoch (or --eval-every steps) first")
    names = list(labels) if labels is not None else [d.resolve().name for d, _ in runs]
    keys = []
    for _, recs in runs:
        keys += [k for k in scalar_keys(recs) if k not in keys]
    has_rel = any("rel_update" in r for _, recs in runs for r in recs)
    panels = [*keys, *(["rel_update"] if has_rel else []), "train_loss", "accuracy"]
    x = x_key(run_dirs)
    fig = Figure(figsize=(3.6 * len(panels), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for (_, recs), name in zip(runs, names):
        for ax, panel in zip(axes, panels):
            _draw(ax, recs, panel, name, panel in keys, x)
    for ax, panel in zip(axes, panels):
        ax.set_xlabel(x)
        ax.set_title(_TITLES.get(panel, panel))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small")
    return fig


def _draw(ax: Any, recs: Sequence[dict[str, Any]], panel: str, name: str, scalar: bool,
          x: str) -> None:
    mark = {"marker": "o", "markersize": 3} if len(recs) < _MARKED else {}
    if panel == "accuracy":
        line = ax.plot(*_series(recs, "train_acc", x), label=f"{name} train", **mark)[0]
        ax.plot(*_series(recs, "test_acc", x), "--", color=line.get_color(),
                label=f"{name} test", **mark)
        return
    if not scalar:
        ax.plot(*_series(recs, panel, x), label=name, **mark)
        if panel == "train_loss" and all(v > 0 for v in _series(recs, panel, x)[1]):
            ax.set_yscale("log")
        return
    xs, mean = _series(recs, f"{panel}_mean", x)
    line = ax.plot(xs, mean, label=name, **mark)[0]
    lo, hi = _series(recs, f"{panel}_min", x)[1], _series(recs, f"{panel}_max", x)[1]
    if len(lo) == len(xs) == len(hi):
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
