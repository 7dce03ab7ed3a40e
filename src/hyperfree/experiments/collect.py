"""Read an experiment's run directories back: per-seed records and per-label :class:`Row` s.

A run directory counts when it has ``experiment.json`` (written by the runner when the run
finished) and at least one epoch in ``metrics.jsonl``, or when it diverged. Rows aggregate the
seeds of a label: mean and (sample, n-1) standard deviation of every final-epoch number; a
diverged seed counts as NaN, which the report prints as "diverged". They also carry the test
numbers' curves over the run (mean over seeds at each evaluation), which time-to-result reads.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from hyperfree.train import read_config, read_metrics

from ._spec import PROFILES, Row
from .runner import RUN_INFO_NAME

__all__ = ["RunResult", "profile_dir", "load_runs", "aggregate", "available_profiles",
           "mean_std"]

# final-epoch numbers a Row carries (when recorded)
_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "rel_update")
# evaluation numbers a Row also carries as a curve over the run (time-to-result)
_CURVES = ("test_loss", "test_acc")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One finished run: its ``experiment.json`` info, config, environment and records."""

    run_dir: Path
    info: dict[str, Any]
    config: dict[str, Any]
    environment: dict[str, Any]
    records: list[dict[str, Any]]


def profile_dir(runs_dir: str | os.PathLike[str], experiment: str, profile: str) -> Path:
    """``<runs_dir>/experiments/<experiment>/<profile>``."""
    return Path(runs_dir) / "experiments" / experiment / profile


def load_runs(runs_dir: str | os.PathLike[str], experiment: str, profile: str
              ) -> list[RunResult]:
    """The finished runs of ``experiment`` under ``profile``, sorted by directory name."""
    root = profile_dir(runs_dir, experiment, profile)
    out = []
    for run_dir in sorted(root.glob("*")) if root.is_dir() else []:
        info_file = run_dir / RUN_INFO_NAME
        if not info_file.is_file():
            continue
        info = json.loads(info_file.read_text())
        records = read_metrics(run_dir)
        if not records and not info.get("diverged"):
            continue
        body = json.loads((run_dir / "config.json").read_text())
        out.append(RunResult(run_dir, info, read_config(run_dir),
                             dict(body.get("environment", {})), records))
    return out


def available_profiles(runs_dir: str | os.PathLike[str], experiment: str) -> list[str]:
    """Profiles of ``experiment`` with at least one finished run, in :data:`PROFILES` order."""
    return [p for p in PROFILES if load_runs(runs_dir, experiment, p)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) of ``values``; std is 0 for one value, NaN-free inputs assumed."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _final(run: RunResult, key: str) -> float | None:
    if run.info.get("diverged"):
        return float("nan")
    value = run.records[-1].get(key) if run.records else None
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def _curve(runs: Sequence[RunResult], key: str) -> tuple[tuple[int, float], ...]:
    """((step, mean over the runs), ...) at the steps where every run recorded ``key``."""
    if any(r.info.get("diverged") for r in runs):
        return ()
    per_run = [{int(rec["step"]): float(rec[key]) for rec in r.records
                if rec.get(key) is not None and rec.get("step") is not None} for r in runs]
    steps = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    return tuple((s, sum(d[s] for d in per_run) / len(per_run)) for s in steps)


def aggregate(runs: Sequence[RunResult]) -> list[Row]:
    """One :class:`Row` per label (seeds pooled), in first-seen order."""
    by_label: dict[str, list[RunResult]] = {}
    for run in runs:
        by_label.setdefault(str(run.info["label"]), []).append(run)
    rows = []
    for label, group in by_label.items():
        first = group[0].info
        metrics: dict[str, tuple[float, float]] = {}
        for key in _METRICS:
            vals = [v for v in (_final(r, key) for r in group) if v is not None]
            if vals:
                metrics[key] = mean_std(vals)
        seconds = mean_std([float(r.info.get("wall_seconds", 0.0)) for r in group])[0]
        curves = {key: c for key in _CURVES if (c := _curve(group, key))}
        rows.append(Row(label, str(first["group"]), str(first.get("panel", "")), first.get("x"),
                        first.get("y"), len(group), metrics, seconds, curves))
    return rows
