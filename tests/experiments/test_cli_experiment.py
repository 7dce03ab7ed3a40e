"""The ``hyperfree experiment`` / ``hyperfree report`` subcommands (argparse layer).

Checks the --data-dir parsing, that an experiment runs from the command line under the smoke
profile and a second invocation skips it, that the report command writes the Markdown, and
that a missing gpu dataset fails with a one-line error (exit status 2) naming the fix.
Run: .venv/bin/python -m pytest -q tests/experiments/test_cli_experiment.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hyperfree.cli import experiment as cli_experiment
from hyperfree.cli import main
from hyperfree.cli import report as cli_report
from hyperfree.cli import SUBCOMMANDS, register_subcommand


@pytest.fixture(autouse=True)
def _subcommands() -> None:
    """Make sure both subcommands exist (the lead adds them to the table in cli/__init__)."""
    if "experiment" not in SUBCOMMANDS:
        register_subcommand("experiment", cli_experiment.add_arguments, cli_experiment.run)
    if "report" not in SUBCOMMANDS:
        register_subcommand("report", cli_report.add_arguments, cli_report.run)


def test_parse_data_dirs() -> None:
    assert cli_experiment.parse_data_dirs(["cifar10=/d", "/x"]) == {"cifar10": "/d", "": "/x"}
    with pytest.raises(ValueError, match="given twice"):
        cli_experiment.parse_data_dirs(["/a", "/b"])
    with pytest.raises(ValueError, match="has no path"):
        cli_experiment.parse_data_dirs(["cifar10="])


def test_experiment_then_report_from_the_command_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["experiment", "shape", "--profile", "smoke", "--device", "cpu",
            "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "[1/1] shape agd-d2-w64 seed 0 ... ETA --:--" in first
    assert main(argv) == 0
    assert "1 of 1 runs already finished, skipped" in capsys.readouterr().out
    out = tmp_path / "results.md"
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "## 3. shape" in out.read_text() and (tmp_path / "figures" / "shape.png").is_file()


def test_gpu_profile_without_data_fails_in_one_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", "depth", "--profile", "gpu", "--device", "cpu",
                 "--runs-dir", str(tmp_path), "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "nowhere" in err and "hyperfree experiment: error:" in err


def test_missing_text_file_fails_before_any_run(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", "all", "--profile", "smoke", "--device", "cpu",
                 "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--data-dir tinyshakespeare=PATH" in err
    assert not (tmp_path / "experiments").exists()  # not even the first experiment ran


def test_parser_offers_every_experiment_and_all() -> None:
    parser = argparse.ArgumentParser()
    cli_experiment.add_arguments(parser)
    args = parser.parse_args(["all", "--seeds", "3", "--data-dir", "/x"])
    assert args.name == "all" and args.seeds == 3 and args.data_dir == ["/x"]
