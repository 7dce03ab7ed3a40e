"""Shared fixtures of the experiment-suite tests: one data cache per process, a tiny text file."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from hyperfree.experiments import DataCache


@pytest.fixture(scope="session")
def cache() -> DataCache:
    """Datasets loaded once per test process (Fashion-MNIST is the costly one)."""
    return DataCache()


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small UTF-8 text (a few KB) standing in for tinyshakespeare."""
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    lines = [f"To be, or not to be: line {i} of the question, whether 'tis nobler.\n"
             for i in range(200)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a CPU shared with other jobs, 2 threads were 10-30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
