"""Every failure a user can cause is one line on stderr, exit 2 (3 for divergence), no
traceback, and nothing on disk lost:

* memory: ``--width 100000``, ``--depth 1000000`` and a width whose size overflows are refused
  before anything is allocated, naming the size and the flags to lower; an allocation that
  fails mid-run names the flags too;
* a directory that cannot be written (a new run, ``--resume``), a checkpoint write that fails
  mid-run (the last good checkpoint kept, no temporary file left);
* Ctrl-C before the command has started, SIGTERM mid-run (checkpoint, exit 143, lock gone), a
  stale ``.lock`` cleared by the next run;
* messages in the CLI's words (``--data-dir``, ``--epochs``), limits as they are (``--gain``'s
  1e6), a tower's divergence hint naming its stack, ``--train-bs`` above the training set,
  ``report`` of a runs directory without runs.

Run: .venv/bin/python -m pytest -q tests/cli/test_cli_failures.py
"""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from hyperfree import cli
from hyperfree.cli import main
from hyperfree.train import _run as run_module
from hyperfree.train import rundir as rundir_module
from hyperfree.train import stats as stats_module

SIZE = ["--depth", "3", "--width", "32"]
QUIET = ["--limit-batches", "3", "--test-bs", "500", "--no-progress", "--no-plots", "--threads",
         "1"]
FAST = [*SIZE, *QUIET]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit directly
        return int(exc.code or 0)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, fragments", [
    (["--width", "100000"], ["(fcn, --depth 8, --width 100000) needs more than the",
                              "GB of memory available to train (over",
                              "lower --width, --depth"]),
    (["--depth", "1000000"], ["(fcn, --depth 1000000, --width 256)", "lower --width, --depth"]),
    (["--width", "1000000000000000000"], ["size overflows", "lower --width, --depth"]),
    (["--width", "1e18"], ["argument --width: invalid int value: '1e18'"]),
    (["--train-bs", "100000000"], ["--train-bs 100000000 is larger than the 60000 training "
                                   "examples of fashion-mnist; give at most 60000"]),
    (["--gain", "1e300"], ["agd needs --gain in (0, 1e6] (AGD's limit), got 1e+300"]),
    (["--epochs", "0"], ["argument --epochs: 0 is below 1"]),
    (["--optimizer", "adam", "--epochs", "auto", "--schedule", "cosine"],
     ["schedule 'cosine' decays over a known number of steps"]),
    (["--dataset", "mnist", "--data-dir", "MISSING"], ["pass --data-dir the folder", "or "
                                                       "--download"]),
    (["--eval-every", "0"], ["--eval-every must be an integer >= 1"]),
])
def test_refusals_before_any_work(argv: list[str], fragments: list[str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    out = tmp_path / "run"
    base = QUIET if {"--depth", "--width"} & set(argv) else FAST
    assert _run(["train", "--out", str(out), *base, *argv]) == 2
    err = _one_line(capsys)
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()  # nothing was created


def test_gain_limit_is_agds_own() -> None:
    from hyperfree import AGD
    from hyperfree.train.optimizers import GAIN_MAX

    model = torch.nn.Linear(4, 3, bias=False)
    AGD(model, gain=GAIN_MAX)
    with pytest.raises(ValueError):
        AGD(model, gain=GAIN_MAX * 1.000001)


def test_unwritable_directory_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _run(["train", "--epochs", "1", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any) -> int:  # as a read-only directory would
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(rundir_module.os, "open", refuse)
    assert _run(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert f"cannot write in {run}: Permission denied" in _one_line(capsys)
    assert _run(["train", "--out", str(tmp_path / "new"), *FAST]) == 2
    assert "Permission denied" in _one_line(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_failed_checkpoint_write_keeps_the_last_good_one(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    real = run_module.save_checkpoint
    calls: list[int] = []

    def disk_full(path: Path, payload: dict) -> None:
        calls.append(1)
        if len(calls) == 2:  # the second epoch's checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, payload)

    monkeypatch.setattr(run_module, "save_checkpoint", disk_full)
    run = tmp_path / "run"
    assert _run(["train", "--epochs", "3", "--out", str(run), *FAST]) == 2
    err = _one_line(capsys)
    assert f"could not write {run / 'checkpoint.pt'}: No space left on device; the last good " \
           f"checkpoint ({run / 'checkpoint.pt'}) is kept" in err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json",
                                                     "metrics.jsonl"]  # no .lock, no .tmp
    monkeypatch.setattr(run_module, "save_checkpoint", real)
    assert _run(["train", "--resume", str(run), "--epochs", "3"]) == 0  # nothing was lost
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_allocation_failure_mid_run_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def fail(self: Any) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 40000000000 bytes.")

    monkeypatch.setattr(run_module._Run, "evaluate", fail)
    assert _run(["train", "--epochs", "1", "--out", str(tmp_path / "run"), *FAST]) == 2
    err = _one_line(capsys)
    assert "out of memory: 40 GB asked for while training; nothing was saved; lower " \
           "--train-bs, --test-bs or --width, --depth" in err


def test_ctrl_c_before_the_command_starts(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> Any:  # as if Ctrl-C came while torch was being imported
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["train"]) == 130
    assert "interrupted before anything was written" in _one_line(capsys)


@pytest.fixture
def sigterm_safe() -> Iterator[None]:
    """A SIGTERM handler that cannot kill the test process, whatever happens."""
    def safe(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, safe)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_checkpoints_releases_the_lock_and_exits_143(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        sigterm_safe: None) -> None:
    real = stats_module.EpochStats.add_batch
    calls: list[int] = []

    def add_batch(self: Any, *args: Any, **kwargs: Any) -> None:  # SIGTERM in the 2nd step
        real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(stats_module.EpochStats, "add_batch", add_batch)
    run = tmp_path / "run"
    assert _run(["train", "--epochs", "1", "--out", str(run), *FAST]) == 143
    assert "terminated: checkpoint saved" in capsys.readouterr().err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 2)
    assert not (run / ".lock").exists()


def test_a_stale_lock_is_cleared_by_the_next_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _run(["train", "--epochs", "1", "--out", str(run), *FAST]) == 0
    (run / ".lock").write_text("999999999\n")  # left by a process killed with -9
    assert _run(["train", "--resume", str(run)]) == 0  # nothing left to do: still cleared
    assert not (run / ".lock").exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").write_text("999999999\n")  # killed before it wrote anything
    assert _run(["train", "--epochs", "1", "--out", str(fresh), *FAST]) == 0
    assert not (fresh / ".lock").exists() and (fresh / "checkpoint.pt").is_file()


@pytest.mark.parametrize("stack, smaller, tower_said", [
    ("sgd(1e6)/sgd(1e-5)", "'sgd(1e6)/sgd(1e-7)'", ""),  # the loop sees the loss go non-finite
    ("sgd(10)/sgd(1)", "'sgd(10)/sgd(0.01)'", "Level 1 (sgd(lr=1.0)) tunes level 0's step size"),
])
def test_tower_divergence_names_what_a_tower_can_change(stack: str, smaller: str, tower_said: str,
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    run = tmp_path / "run"
    argv = ["train", "--optimizer", stack, "--loss", "xent", "--epochs", "1", "--out", str(run),
            *SIZE, *QUIET, "--limit-batches", "30"]
    assert _run(argv) == 3
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("hyperfree: warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("hyperfree train: training diverged in epoch 1")
    assert "stack takes no --lr or --gain" in lines[0] and smaller in lines[0]
    assert tower_said in lines[0] and "--lr/--gain" not in lines[0]


def test_report_refuses_a_runs_dir_without_runs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new.md"
    assert _run(["report", "--runs-dir", str(tmp_path / "typo"), "--out", str(out)]) == 2
    assert "no finished runs under" in _one_line(capsys)
    assert not out.exists()
