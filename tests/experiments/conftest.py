"""Shared fixtures of the experiment-suite tests: one data cache per process, a tiny text file.
(One torch thread per test: the suite-wide ``_one_thread`` of ``tests/conftest.py``, which a
fixture of the same name here once shadowed, so that a test left the threads it set to the next.)"""
from __future__ import annotations

from pathlib import Path

import pytest

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
