"""Resume: finished runs are skipped, half-finished runs continue from their checkpoint.

Uses a tiny unregistered experiment (FCN 2 x 16, 2 epochs of 3 batches, 2 runs). Checks that a
second call trains nothing, that a run stopped after its first epoch resumes to the same
records as an uninterrupted run, that a run directory holding another run is refused, that
the progress lines count runs and carry an ETA, and that a diverging run is recorded as such.
Run: .venv/bin/python -m pytest -q tests/experiments/test_experiments_resume.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hyperfree.experiments import DataCache, Experiment, RunSpec, run_experiment
from hyperfree.experiments._verdicts import shape_verdict
from hyperfree.train import Callback, TrainingInterrupted, read_metrics

BASE = {"arch": "fcn", "depth": 2, "width": 16, "epochs": 2, "limit_batches": 3,
        "test_bs": 256, "optimizer": "agd"}


def _tiny(**changes: Any) -> Experiment:
    runs = (RunSpec("a", "agd", {**BASE, **changes}), RunSpec("b", "adam",
                                                            {**BASE, "optimizer": "adam"}))
    return Experiment("tiny", "tiny", "claim", "curves", {"smoke": runs}, shape_verdict)


class _StopAfterFirstEpoch(Callback):
    def __init__(self) -> None:
        self.fired = False

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def test_second_call_skips_finished_runs(tmp_path: Path, cache: DataCache) -> None:
    lines: list[str] = []
    dirs = run_experiment(_tiny(), "smoke", runs_dir=tmp_path, device="cpu", cache=cache,
                          log=lines.append)
    assert [ln.split(" ...")[0] for ln in lines if "ETA" in ln] == \
        ["[1/2] tiny a seed 0", "[2/2] tiny b seed 0"]
    assert "ETA --:--" in lines[0] and "ETA --:--" not in lines[2]
    stamps = [(d / "metrics.jsonl").stat().st_mtime_ns for d in dirs]
    again: list[str] = []
    run_experiment(_tiny(), "smoke", runs_dir=tmp_path, device="cpu", cache=cache,
                   log=again.append)
    assert again == ["tiny/smoke: 2 of 2 runs already finished, skipped"]
    assert [(d / "metrics.jsonl").stat().st_mtime_ns for d in dirs] == stamps
    (dirs[0] / "experiment.json").unlink()  # stopped after training, before the info file
    run_experiment(_tiny(), "smoke", runs_dir=tmp_path, device="cpu", cache=cache)
    assert (dirs[0] / "experiment.json").is_file()
    assert (dirs[0] / "metrics.jsonl").stat().st_mtime_ns == stamps[0]


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path: Path,
                                                             cache: DataCache) -> None:
    ref = run_experiment(_tiny(), "smoke", runs_dir=tmp_path / "ref", device="cpu", cache=cache)
    stop = _StopAfterFirstEpoch()
    with pytest.raises(TrainingInterrupted):
        run_experiment(_tiny(), "smoke", runs_dir=tmp_path / "cut", device="cpu", cache=cache,
                       callbacks=[stop])
    cut_dir = tmp_path / "cut" / "experiments" / "tiny" / "smoke" / "a-seed0"
    assert len(read_metrics(cut_dir)) == 1
    lines: list[str] = []
    dirs = run_experiment(_tiny(), "smoke", runs_dir=tmp_path / "cut", device="cpu",
                          cache=cache, log=lines.append)
    assert any("(resuming)" in ln for ln in lines)
    for a, b in zip(ref, dirs):
        want, got = read_metrics(a), read_metrics(b)
        assert len(got) == 2
        for key in ("train_loss", "test_loss", "test_acc"):
            assert [r[key] for r in got] == pytest.approx([r[key] for r in want], rel=1e-5)


def test_directory_holding_another_run_is_refused(tmp_path: Path, cache: DataCache) -> None:
    run_experiment(_tiny(), "smoke", runs_dir=tmp_path, device="cpu", cache=cache)
    with pytest.raises(ValueError, match="holds a run with width=16"):
        run_experiment(_tiny(width=32), "smoke", runs_dir=tmp_path, device="cpu", cache=cache)


def test_a_diverged_run_is_a_result_not_a_crash(tmp_path: Path, cache: DataCache) -> None:
    """SGD at lr 1e30 overflows at once: the suite records it, skips it next time, and the
    report's row says "diverged" (its accuracy counts as 0 in the verdicts)."""
    from hyperfree.experiments import aggregate, load_runs
    from hyperfree.experiments.report import _cell

    exp = _tiny(optimizer="sgd", lr=1e30)
    lines: list[str] = []
    dirs = run_experiment(exp, "smoke", runs_dir=tmp_path, device="cpu", cache=cache,
                          log=lines.append)
    info = json.loads((dirs[0] / "experiment.json").read_text())
    assert info["diverged"].startswith("training diverged in epoch 1")
    assert any(ln.startswith("[1/2] a seed 0: training diverged") for ln in lines)
    assert len(read_metrics(dirs[1])) == 2  # the other run is unaffected
    again: list[str] = []
    run_experiment(exp, "smoke", runs_dir=tmp_path, device="cpu", cache=cache,
                   log=again.append)
    assert again == ["tiny/smoke: 2 of 2 runs already finished, skipped"]
    rows = {r.label: r for r in aggregate(load_runs(tmp_path, "tiny", "smoke"))}
    assert _cell(rows["a"], "test_acc", pct=True) == "diverged"
    assert _cell(rows["b"], "test_acc", pct=True) != "diverged"
