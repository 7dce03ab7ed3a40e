"""Time to result (``hyperfree.experiments.time_to_result``): the curves a Row carries, the
crossing interpolated between evaluations, and what the race's verdict says with it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hyperfree.experiments import Row, aggregate, load_runs
from hyperfree.experiments.race import race_verdict
from hyperfree.experiments.time_to_result import (describe_time_to_result, steps_to_reach,
                                                  time_to_result)
from hyperfree.train import TrainConfig


def _write(root: Path, label: str, seed: int, evals: dict[int, float], diverged=False) -> None:
    run_dir = root / "experiments" / "fake" / "quick" / f"{label}-seed{seed}"
    run_dir.mkdir(parents=True)
    body = {"config": TrainConfig(seed=seed).to_dict(), "environment": {}}
    (run_dir / "config.json").write_text(json.dumps(body))
    lines = [json.dumps({"step": s, "train_loss": 1.0}) for s in (5, 15)]  # no test number
    lines += [json.dumps({"epoch": i + 1, "step": s, "test_acc": a, "test_loss": 1 - a})
              for i, (s, a) in enumerate(evals.items())]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    info = {"label": label, "group": label, "panel": "", "seed": seed, "wall_seconds": 1.0,
            "diverged": diverged}
    (run_dir / "experiment.json").write_text(json.dumps(info))


def test_a_row_carries_the_mean_curve_at_the_evaluations_every_seed_has(tmp_path: Path):
    _write(tmp_path, "agd", 0, {10: 0.5, 20: 0.7, 30: 0.8})
    _write(tmp_path, "agd", 1, {10: 0.7, 20: 0.9})  # stopped early: no step 30
    _write(tmp_path, "bad", 0, {10: 0.5})
    _write(tmp_path, "bad", 1, {10: 0.6}, diverged=True)
    rows = {r.label: r for r in aggregate(load_runs(tmp_path, "fake", "quick"))}
    curve = rows["agd"].curves["test_acc"]
    assert [s for s, _ in curve] == [10, 20]
    assert [v for _, v in curve] == pytest.approx([0.6, 0.8])
    assert rows["agd"].curves["test_loss"][1][1] == pytest.approx(0.2)
    assert rows["bad"].curves == {}  # a diverged seed: no curve to read a time from


@pytest.mark.parametrize("curve, target, higher, want", [
    ([(100, 0.5), (200, 0.7), (400, 0.9)], 0.8, True, (300 / 400, False)),  # halfway 200-400
    ([(100, 0.5), (200, 0.7), (400, 0.9)], 0.7, True, (200 / 400, False)),  # exactly at 200
    ([(100, 0.95), (200, 0.97)], 0.9, True, (100 / 200, True)),  # already at the first
    ([(100, 0.5), (200, 0.7)], 0.8, True, None),  # never
    ([(50, 2.5), (100, 2.0), (150, 1.9)], 2.25, False, (75 / 150, False)),  # a loss falls
    ([(50, 2.5), (100, math.nan), (150, 1.0)], 2.0, False, None),  # diverged on the way
    ([], 0.5, True, None),
])
def test_steps_to_reach_interpolates_between_evaluations(curve, target, higher, want):
    got = steps_to_reach(curve, target, higher)
    if want is None:
        assert got is None
    else:
        assert got[0] == pytest.approx(want[0]) and got[1] == want[1]


def _row(group: str, panel: str, final: float, curve=()) -> Row:
    key = "test_loss" if panel.startswith("gpt") else "test_acc"
    return Row(f"{panel}-{group}", group, panel, 1e-3 if group == "adamw" else None, None, 3,
               {key: (final, 0.0)}, 1.0, {key: tuple(curve)} if curve else {})


def test_time_to_result_reads_the_default_against_the_best_adamw():
    metrics = {"gpt": ("test_loss", False)}
    rows = [_row("agd", "conv", 0.91, [(1, 0.88), (2, 0.91)]),
            _row("adamw", "conv", 0.895),
            _row("agd", "gpt", 1.9, [(250, 2.3), (500, 1.9)]),
            _row("adamw", "gpt", 2.1),
            _row("agd", "lstm", 0.5)]  # no curve recorded: left out
    reference = {r.panel: r for r in rows if r.group == "adamw"}
    reach = time_to_result(rows, "agd", reference, ["conv", "gpt", "lstm"], metrics)
    assert set(reach) == {"conv", "gpt"}
    assert reach["conv"][0] == pytest.approx(0.75)   # 0.895 halfway between 0.88 and 0.91
    assert reach["gpt"][0] == pytest.approx(0.75)    # 2.1 halfway between 2.3 and 1.9
    assert describe_time_to_result(reach) == "conv 75%, gpt 75%"
    assert describe_time_to_result({"fcn": (0.5, True), "x": None}) == \
        "fcn ≤ 50%, x not reached"


def test_the_race_verdict_quotes_the_time_beside_the_long_horizon_margins():
    group = "agd-spectral-average"
    rows = [_row(group, "conv", 0.91, [(1, 0.88), (2, 0.91)]), _row("adamw", "conv", 0.895),
            _row(group, "conv-long", 0.93, [(4, 0.90), (8, 0.93)]),
            _row("adamw", "conv-long", 0.92)]
    verdict = race_verdict(rows, presets=(group,), default=group,
                           expected=[("conv", group), ("conv-long", group)])
    assert "time to the best AdamW's result (fraction of the run): conv 75% → conv-long " \
           "83%" in verdict.text
    assert any("conv 75%, conv-long 83%" in line for line in verdict.details)
