"""A run directory belongs to the run that holds its lock: a second run on it is refused with
one line (in-process and through the CLI), a lock left by a killed process does not block, a
directory that cannot be made (``--out`` is or lies under a file) is a one-line ValueError, and
a directory the run created is removed again if the run failed before writing anything.

Run: .venv/bin/python -m pytest -q tests/train/test_train_rundir.py
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_helpers import tiny_config, tiny_image_bundle

from hyperfree.cli import main
from hyperfree.train import CHECKPOINT_NAME, read_metrics, train
from hyperfree.train.rundir import LOCK_NAME, claim_run_dir

torch.set_num_threads(1)


def test_second_run_on_a_locked_directory_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir):
        with pytest.raises(ValueError, match=rf"{run_dir} is in use by another run "
                                             rf"\(pid {os.getpid()}\)"):
            train(tiny_config(epochs=1, out_dir=str(run_dir)), data=tiny_image_bundle())
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing written
    train(tiny_config(epochs=1, out_dir=str(run_dir)), data=tiny_image_bundle())
    assert len(read_metrics(run_dir)) == 1 and (run_dir / CHECKPOINT_NAME).is_file()


def test_cli_refuses_a_locked_directory_in_one_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir):
        code = main(["train", "--out", str(run_dir), "--limit-batches", "1", "--epochs", "1",
                     "--depth", "2", "--width", "8", "--no-progress", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is in use by another run" in err


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = ("import fcntl, os, sys\n"  # what claim_run_dir does, without importing torch
              "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
              "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
              "os.kill(os.getpid(), 9)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir / LOCK_NAME)])
    assert proc.wait(timeout=120) == -9
    assert (run_dir / LOCK_NAME).read_text().strip() == str(proc.pid)  # a stale lock file ...
    train(tiny_config(epochs=1, out_dir=str(run_dir)), data=tiny_image_bundle())  # ... no matter
    assert len(read_metrics(run_dir)) == 1


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_out_that_is_or_lies_under_a_file_is_one_line(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "f.txt"
    blocker.write_text("not a directory")
    out = blocker if where == "file" else blocker / "run"
    with pytest.raises(ValueError, match=rf"cannot use {out} as the run directory: {blocker} is "
                                         "a file, not a directory; choose another --out"):
        train(tiny_config(epochs=1, out_dir=str(out)), data=tiny_image_bundle())


def test_directory_made_for_a_failed_run_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="unknown model"):
        train(tiny_config(arch="nope", out_dir=str(out)), data=tiny_image_bundle())
    assert not out.exists()
