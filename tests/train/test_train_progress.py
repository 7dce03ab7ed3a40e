"""Progress output: a redrawn bar only on a terminal, one plain line per epoch elsewhere.

* ``hyperfree train`` with stderr redirected to a file (a real process): no carriage return in
  the file, and exactly one ``epoch E/N: ...`` line per epoch, with its wall time, the loss,
  AGD's step size shown as ``η`` (never ``eta``, which reads as a time) and the time left;
* the wall time and time left follow the clock (a fake one here), ``≤`` for an auto run;
* :class:`Progress` on a stream that says it is a terminal draws a tqdm bar (carriage returns);
  on one that does not, it writes one line per epoch; disabled, nothing.

Run: .venv/bin/python -m pytest -q tests/train/test_train_progress.py
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hyperfree.train.progress import Progress


def test_cli_with_redirected_stderr_writes_one_line_per_epoch(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "hyperfree", "train", "--epochs", "2", "--limit-batches", "3",
             "--depth", "3", "--width", "16", "--test-bs", "500", "--no-plots", "--threads", "1",
             "--out", str(tmp_path / "run")], stderr=fh, stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert proc.returncode == 0
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2, text
    for epoch, line in enumerate(lines, 1):
        assert re.fullmatch(rf"epoch {epoch}/2: 3/3 steps in [0-9.]+ s, loss [0-9.e-]+, "
                            r"acc [0-9.e-]+, η [0-9.e-]+; [0-9.]+ s left", line), line
        assert "eta" not in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _epochs(progress: Progress, epochs: int = 2, steps: int = 4) -> None:
    for e in range(epochs):
        progress.start(e, steps)
        for _ in range(steps // 2):
            progress.update(2, {"loss": 0.5, "eta": 0.25})
        progress.close()


def test_bar_draws_only_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    _epochs(Progress(enabled=True, epochs=2, stream=terminal))
    assert "\r" in terminal.getvalue() and "epoch 2/2" in terminal.getvalue()

    plain = io.StringIO()
    _epochs(Progress(enabled=True, epochs=2, stream=plain))
    assert plain.getvalue().splitlines()[1].startswith("epoch 2/2: 4/4 steps in ")


def test_plain_line_shows_wall_time_time_left_and_eta_as_greek() -> None:
    now = [100.0]
    plain = io.StringIO()
    progress = Progress(enabled=True, epochs=3, total_steps=12, stream=plain,
                        clock=lambda: now[0])
    for epoch, seconds in enumerate([2.0, 6.0]):  # 4 steps an epoch
        progress.start(epoch, 4, step=4 * epoch)
        now[0] += seconds
        progress.update(4, {"loss": 0.5, "eta": 0.25})
        progress.close()
    # after epoch 1: 8 steps left at 2 s / 4 steps; after epoch 2: 4 left at 8 s / 8 steps
    assert plain.getvalue() == ("epoch 1/3: 4/4 steps in 2.0 s, loss 0.5, η 0.25; 4.0 s left\n"
                                "epoch 2/3: 4/4 steps in 6.0 s, loss 0.5, η 0.25; 4.0 s left\n")
    auto = io.StringIO()
    progress = Progress(enabled=True, epochs=30, total_steps=3000, auto=True, stream=auto,
                        clock=lambda: now[0])
    progress.start(0, 100, step=0)
    now[0] += 10.0
    progress.update(100, {"eta": 0.5})
    progress.close()
    assert auto.getvalue() == ("epoch 1/≤30 (auto): 100/100 steps in 10.0 s, η 0.5; "
                               "≤ 4 min 50 s left\n")
    segment = io.StringIO()  # a record mid-epoch (--eval-every): the steps of this segment
    progress = Progress(enabled=True, epochs=2, total_steps=20, stream=segment,
                        clock=lambda: now[0])
    progress.start(0, 10, 4, step=4)
    now[0] += 3.0
    progress.update(3, {"loss": 1.0})
    progress.close()
    assert segment.getvalue() == "epoch 1/2: steps 5-7 of 10 in 3.0 s, loss 1; 13.0 s left\n"

    off = io.StringIO()
    progress = Progress(enabled=False, epochs=2, stream=off)
    _epochs(progress)
    assert off.getvalue() == "" and not progress.active
