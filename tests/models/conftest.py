"""Shared fixtures for the model-registry tests: a fixed seed per test (one torch thread per
test is the suite-wide ``_one_thread`` of ``tests/conftest.py``)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Each test starts from ``manual_seed(0)``."""
    torch.manual_seed(0)
