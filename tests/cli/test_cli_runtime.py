"""The shared runtime of long-running commands: ``--threads`` validation and Ctrl-C handling
(the first SIGINT during training becomes a stop request at the next step boundary, before
training it interrupts at once, the second always interrupts, the old handler comes back;
SIGTERM the same, with exit status 143), and the thread count without ``--threads``: the idle
cores (two samples of /proc/stat), at least 1, or a resumed run's own count.

Run: .venv/bin/python -m pytest -q tests/cli/test_cli_runtime.py
"""
from __future__ import annotations

import signal

import pytest
import torch

from hyperfree.cli import _runtime as runtime
from hyperfree.cli._runtime import EXIT_SIGNAL, pick_threads, set_threads, stop_on_ctrl_c
from hyperfree.cli.experiment import run as run_experiment_command


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_thread_counts_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=f"--threads must be >= 1, got {bad}"):
        set_threads(bad)


def test_thread_count_is_applied() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("cores, busy, expected", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 5.0, 1),
    (16, 3.2, 13), (1, 0.0, 1)])
def test_threads_are_the_idle_cores(cores: int, busy: float, expected: int) -> None:
    assert pick_threads(cores, busy) == expected


def test_busy_cores_come_from_two_samples_of_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter([(100, 1000), (250, 1200)])  # (busy, total) jiffies: 150 of 200 busy
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert runtime.busy_cores(interval=0) == pytest.approx(1.5)
    monkeypatch.setattr(runtime, "_cpu_times", lambda: None)  # no /proc/stat: unknown
    assert runtime.busy_cores(interval=0) is None


def test_unset_threads_follow_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(runtime, "busy_cores", lambda interval=0.2: 1.0)  # one job beside us
    assert set_threads(None) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(runtime, "busy_cores", lambda interval=0.2: 0.1)  # an idle machine
    assert set_threads(None) == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr(runtime, "busy_cores", lambda interval=0.2: None)  # unknown: torch's
    assert set_threads(None) == 2


def test_a_resumed_run_keeps_its_thread_count(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperfree.cli import main

    run = tmp_path / "run"
    fast = ["--limit-batches", "2", "--depth", "2", "--width", "16", "--no-progress",
            "--no-plots", "--test-bs", "1000"]
    assert main(["train", "--epochs", "1", "--out", str(run), "--threads", "1", *fast]) == 0
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(runtime, "busy_cores", lambda interval=0.2: 0.0)  # would pick 2
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["exactness"]["num_threads"] == 1


def test_sigterm_is_handled_like_ctrl_c() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_ctrl_c() as stop:
        stop.training = True
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        assert EXIT_SIGNAL[stop.signum] == 143
    assert signal.getsignal(signal.SIGTERM) is previous


def test_first_ctrl_c_requests_a_stop_and_second_interrupts() -> None:
    previous = signal.getsignal(signal.SIGINT)
    with stop_on_ctrl_c() as stop:
        stop.training = True  # as after the first step
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_ctrl_c_before_training_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt):
        with stop_on_ctrl_c():
            signal.raise_signal(signal.SIGINT)


def test_experiment_command_validates_threads_like_train() -> None:
    class Args:
        name, data_dir, threads = "depth", [], 0

    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        run_experiment_command(Args())  # type: ignore[arg-type]
