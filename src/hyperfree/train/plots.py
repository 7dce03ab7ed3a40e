"""Figures in the style of the AGD paper's Figure 4 (Bernstein et al. 2023, arXiv 2304.05187).

One row of panels against the epoch: one per scalar the stepper logged (mean over the epoch's
steps, with the min–max band; for AGD that is the automatic learning rate η), the relative
update size ‖ΔW‖/‖W‖ (the paper's Figure 5) when recorded, the training objective, and train
(solid) and test (dashed) accuracy. Several runs overlay, each labelled by its directory name.
Uses matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .record import read_metrics

__all__ = ["scalar_keys", "plot_runs"]


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


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(run_dirs: Sequence[str | os.PathLike[str]], out_file: str | os.PathLike[str],
              *, labels: Sequence[str] | None = None) -> Path:
    """Draw the runs in ``run_dirs`` into the PNG ``out_file``; returns its path.

    Raises FileNotFoundError if a directory has no ``metrics.jsonl`` and ValueError if no run has
    any epoch recorded.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = [(Path(d), read_metrics(d)) for d in run_dirs]
    if not any(recs for _, recs in runs):
        raise ValueError(f"no epochs recorded in {', '.join(str(d) for d in run_dirs)}; "
                         "train at least one epoch first")
    names = list(labels) if labels is not None else [d.resolve().name for d, _ in runs]
    keys = []
    for _, recs in runs:
        keys += [k for k in scalar_keys(recs) if k not in keys]
    has_rel = any("rel_update" in r for _, recs in runs for r in recs)
    panels = [*keys, *(["rel_update"] if has_rel else []), "train_loss", "accuracy"]
    fig = Figure(figsize=(3.6 * len(panels), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for (_, recs), name in zip(runs, names):
        for ax, panel in zip(axes, panels):
            _draw(ax, recs, panel, name, panel in keys)
    for ax, panel in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.set_title(_TITLES.get(panel, panel))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small")
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _draw(ax: Any, recs: Sequence[dict[str, Any]], panel: str, name: str, scalar: bool) -> None:
    if panel == "accuracy":
        line = ax.plot(*_series(recs, "train_acc"), label=f"{name} train")[0]
        ax.plot(*_series(recs, "test_acc"), "--", color=line.get_color(), label=f"{name} test")
        return
    if not scalar:
        ax.plot(*_series(recs, panel), label=name)
        if panel == "train_loss" and all(v > 0 for v in _series(recs, panel)[1]):
            ax.set_yscale("log")
        return
    xs, mean = _series(recs, f"{panel}_mean")
    line = ax.plot(xs, mean, label=name)[0]
    lo, hi = _series(recs, f"{panel}_min")[1], _series(recs, f"{panel}_max")[1]
    if len(lo) == len(xs) == len(hi):
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
