"""The shared runtime of long-running commands: ``--threads`` validation and Ctrl-C handling
(the first SIGINT during training becomes a stop request at the next step boundary, before
training it interrupts at once, the second always interrupts, the old handler comes back).

Run: .venv/bin/python -m pytest -q tests/cli/test_cli_runtime.py
"""
from __future__ import annotations

import signal

import pytest
import torch

from hyperfree.cli._runtime import set_threads, stop_on_ctrl_c
from hyperfree.cli.experiment import run as run_experiment_command


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_thread_counts_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=f"--threads must be >= 1, got {bad}"):
        set_threads(bad)


def test_thread_count_is_applied() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


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
