"""Registry-wide: every registered experiment runs end to end under the ``smoke`` profile.

For each experiment: ``run_experiment(name, "smoke")`` writes one run directory per run (the
``hyperfree train`` layout plus experiment.json) with its one epoch recorded, prints one
"[k/N] ... ETA" line per run, and ``write_report`` turns the runs into a Markdown section with
the claim, a verdict, the command and a PNG figure. CPU only, 1 batch per run.
Run: .venv/bin/python -m pytest -q tests/experiments/test_experiments_smoke.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hyperfree.experiments import DataCache, get_experiment, list_experiments, run_experiment
from hyperfree.experiments import write_report
from hyperfree.train import read_metrics


@pytest.mark.parametrize("name", list_experiments())
def test_experiment_runs_and_reports_under_smoke(name: str, tmp_path: Path, cache: DataCache,
                                                 text_file: Path) -> None:
    lines: list[str] = []
    dirs = run_experiment(name, "smoke", runs_dir=tmp_path / "runs", device="cpu",
                          data_dirs={"tinyshakespeare": str(text_file)}, cache=cache,
                          log=lines.append)
    specs = get_experiment(name).specs("smoke")
    assert len(dirs) == len(specs)
    for run_dir, spec in zip(dirs, specs):
        assert run_dir.name == f"{spec.label}-seed0"
        assert len(read_metrics(run_dir)) == 1
        info = json.loads((run_dir / "experiment.json").read_text())
        assert info["label"] == spec.label and info["group"] == spec.group
        assert info["wall_seconds"] > 0
    starts = [ln for ln in lines if re.match(rf"\[\d+/{len(specs)}\] {name} ", ln)]
    assert len(starts) == len(specs) and all("ETA" in ln for ln in starts)

    md = write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", experiments=[name])
    text = md.read_text()
    assert f"## 1. {name}" in text
    assert "**Reproduced: " in text
    data = " --data-dir tinyshakespeare=PATH" if name in ("towers", "race") else ""
    assert f"`hyperfree experiment {name} --profile smoke --device cpu --threads 1{data}`" in text
    figure = tmp_path / "docs" / "figures" / f"{name}.png"
    assert figure.is_file() and figure.stat().st_size > 5000
    assert f"](figures/{name}.png)" in text
