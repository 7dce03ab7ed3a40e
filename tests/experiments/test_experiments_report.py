"""The report: aggregation over seeds, the verdicts, every figure kind and the Markdown.

Run directories are written by hand here (config.json, metrics.jsonl, experiment.json), so the
expected numbers are known: two seeds with test accuracy 0.6 and 0.8 must report 70.0 ± 14.1%;
a depth run where the defaults train too must not be called reproduced; each figure kind draws a
PNG; the Markdown carries claim, verdict, command, machine, wall time and table.
Run: .venv/bin/python -m pytest -q tests/experiments/test_experiments_report.py
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from hyperfree.experiments import Experiment, Row, RunSpec, aggregate, load_runs, write_report
from hyperfree.experiments import _verdicts as V
from hyperfree.experiments.collect import mean_std
from hyperfree.experiments.figures import draw_figure
from hyperfree.train import TrainConfig


def _write_run(root: Path, exp: str, label: str, seed: int, accs: list[float], group: str,
               x: float | None = None, y: float | None = None, panel: str = "",
               wall: float = 2.0) -> None:
    run_dir = root / "experiments" / exp / "quick" / f"{label}-seed{seed}"
    run_dir.mkdir(parents=True)
    cfg = TrainConfig(epochs=len(accs), seed=seed).to_dict()
    env = {"torch": "2.x", "hostname": "box", "device": "cpu", "num_threads": 2,
           "git_commit": "abcdef1234567"}
    (run_dir / "config.json").write_text(json.dumps({"config": cfg, "environment": env}))
    lines = [json.dumps({"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": a,
                         "test_acc": a, "test_loss": 1 - a, "rel_update": 0.1 / (i + 1)})
             for i, a in enumerate(accs)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    info = {"label": label, "group": group, "panel": panel, "x": x, "y": y, "seed": seed,
            "wall_seconds": wall, "cpu": "TestCPU", "cpu_count": 2}
    (run_dir / "experiment.json").write_text(json.dumps(info))


def _exp(figure: str, verdict: Any = V.depth_verdict) -> Experiment:
    specs = (RunSpec("agd", "agd", {}), RunSpec("adam-lr0.001", "adam", {}, x=1e-3),
             RunSpec("sgd-lr0.1", "sgd", {}, x=0.1))
    return Experiment("fake", "Fake experiment", "AGD trains where defaults fail.", figure,
                      {"quick": specs}, verdict, x_label="lr", y_label="depth", log_x=True,
                      rel_update_table=True)


def _populate(root: Path, adam_acc: float = 0.1) -> None:
    _write_run(root, "fake", "agd", 0, [0.5, 0.6], "agd", y=2)
    _write_run(root, "fake", "agd", 1, [0.7, 0.8], "agd", y=2)
    _write_run(root, "fake", "adam-lr0.001", 0, [0.1, adam_acc], "adam", x=1e-3, y=4)
    _write_run(root, "fake", "sgd-lr0.1", 0, [0.1, 0.1], "sgd", x=0.1, y=4)


def test_aggregate_pools_seeds_into_mean_and_sample_std(tmp_path: Path) -> None:
    _populate(tmp_path)
    rows = {r.label: r for r in aggregate(load_runs(tmp_path, "fake", "quick"))}
    mean, std = rows["agd"].metrics["test_acc"]
    assert rows["agd"].n == 2
    assert mean == pytest.approx(0.7) and std == pytest.approx(math.sqrt(0.02))
    assert rows["sgd-lr0.1"].metrics["test_acc"] == pytest.approx((0.1, 0.0))
    assert mean_std([]) != mean_std([])  # NaN for no values


def test_unfinished_runs_are_ignored(tmp_path: Path) -> None:
    _populate(tmp_path)
    (tmp_path / "experiments" / "fake" / "quick" / "agd-seed1" / "experiment.json").unlink()
    rows = {r.label: r for r in aggregate(load_runs(tmp_path, "fake", "quick"))}
    assert rows["agd"].n == 1


def _row(group: str, acc: float, x: float | None = None, panel: str = "") -> Row:
    return Row(f"{group}-{x}-{panel}", group, panel, x, None, 1, {"test_acc": (acc, 0.0),
                                                                    "train_loss": (0.5, 0.0)},
               1.0)


def test_depth_verdict_requires_the_defaults_to_fail() -> None:
    fail = [_row("agd", 0.8), _row("adam", 0.1), _row("sgd", 0.1)]
    assert V.depth_verdict(fail).status == "yes"
    assert V.depth_verdict([_row("agd", 0.8), _row("adam", 0.85), _row("sgd", 0.1)]).status \
        == "partly"
    assert V.depth_verdict([_row("agd", 0.2), _row("adam", 0.1), _row("sgd", 0.1)]).status \
        == "no"


def test_tuned_verdict_compares_with_the_best_of_the_grid() -> None:
    grid = [_row("adam", 0.80, 1e-3), _row("adam", 0.6, 1e-2), _row("sgd", 0.7, 0.1)]
    assert V.tuned_verdict([_row("agd", 0.79), *grid]).status == "yes"
    no = V.tuned_verdict([_row("agd", 0.70), *grid])
    assert no.status == "no" and "10.0% behind" in no.text


def test_towers_verdict_counts_taller_towers_that_are_no_more_sensitive() -> None:
    rows = [_row(g, a, x, "mlp") for g, accs in (("sgd", (0.1, 0.8)), ("sgd-sgd", (0.7, 0.8)),
                                                 ("sgd-sgd-sgd", (0.75, 0.8)),
                                                 ("adam", (0.5, 0.8)), ("adam-sgd", (0.2, 0.8)))
            for a, x in zip(accs, (1e-4, 1e-2))]
    verdict = V.towers_verdict(rows)
    assert verdict.status == "partly" and "2 of 3" in verdict.text


@pytest.mark.parametrize("figure", ["curves", "sweep", "heatmap", "bars"])
def test_every_figure_kind_draws(tmp_path: Path, figure: str) -> None:
    _populate(tmp_path)
    runs = load_runs(tmp_path, "fake", "quick")
    out = draw_figure(_exp(figure), runs, aggregate(runs), tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # IHDR's width


def test_one_panel_of_bars_adds_the_metric_and_eta_per_record(tmp_path: Path) -> None:
    _populate(tmp_path)
    runs = load_runs(tmp_path, "fake", "quick")
    whole = draw_figure(_exp("bars"), runs, aggregate(runs), tmp_path / "all.png")
    page = draw_figure(_exp("bars"), runs, aggregate(runs), tmp_path / "page.png", panel="")
    assert _png_width(page) == 3 * _png_width(whole)  # bars, metric per record, η per record


def test_markdown_states_claim_verdict_command_machine_and_table(tmp_path: Path) -> None:
    _populate(tmp_path, adam_acc=0.9)  # Adam trains: the claim must not be called reproduced
    md = write_report(tmp_path, tmp_path / "docs" / "results.md", experiments=[_exp("curves")])
    text = md.read_text()
    assert "**Claim.** AGD trains where defaults fail." in text
    assert "**Reproduced: partly.**" in text
    assert "`hyperfree experiment fake --profile quick --seeds 2 --device cpu --threads 2`" \
        in text
    assert "TestCPU (2 cores, 2 torch threads)" in text and "abcdef1234" in text
    assert "| agd | agd | — (depth 2) | 2 | " in text and "70.0 ± 14.1%" in text
    assert "![fake](figures/fake.png)" in text
    assert (tmp_path / "docs" / "figures" / "fake.png").is_file()
    assert "- agd: 0.1, 0.05" in text  # rel_update per epoch, seed mean


def test_wall_time_names_the_format_it_is_written_in(tmp_path: Path) -> None:
    _populate(tmp_path)  # 4 runs of 2 s
    short = write_report(tmp_path, tmp_path / "a" / "results.md", experiments=[_exp("curves")])
    assert "**Wall time.** 00:08 (mm:ss, sum over runs" in short.read_text()
    _write_run(tmp_path, "fake", "sgd-lr0.1", 1, [0.1, 0.1], "sgd", x=0.1, y=4, wall=7192.0)
    long = write_report(tmp_path, tmp_path / "b" / "results.md", experiments=[_exp("curves")])
    assert "**Wall time.** 2:00:00 (h:mm:ss, sum over runs" in long.read_text()


def test_experiment_without_runs_says_how_to_run_it(tmp_path: Path) -> None:
    _populate(tmp_path)
    other = dataclasses.replace(_exp("bars"), name="other")
    text = write_report(tmp_path, tmp_path / "r.md",
                        experiments=[_exp("bars"), other]).read_text()
    assert "Not run yet: `hyperfree experiment other --profile quick`." in text
    assert "Not run yet: `hyperfree experiment fake" not in text
    with pytest.raises(ValueError, match="profile 'huge'"):
        write_report(tmp_path, tmp_path / "r.md", profile="huge")


def test_report_without_any_runs_never_overwrites_an_existing_report(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    out.write_text("published results\n")
    with pytest.raises(ValueError, match="left unchanged"):
        write_report(tmp_path / "no-runs", out, experiments=["depth", "tuned"])
    assert out.read_text() == "published results\n"
    assert not list(out.parent.glob("*.tmp"))
    fresh = tmp_path / "new.md"  # a runs dir with a typo: refused, no all-"not run" report
    with pytest.raises(ValueError, match="no finished runs under .*nothing was written"):
        write_report(tmp_path / "typo", fresh)
    assert not fresh.exists() and not (tmp_path / "figures").exists()
