"""Shared fixtures for the model-registry tests: one CPU thread and a fixed seed per test."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    """Run each test single-threaded (the suite runs under ``-n 2``) with ``manual_seed(0)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
