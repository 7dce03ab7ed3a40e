"""Shared fixtures of the experiment-suite tests: one data cache per process, a tiny text file,
a benchmark script loaded as a module.
(One torch thread per test: the suite-wide ``_one_thread`` of ``tests/conftest.py``, which a
fixture of the same name here once shadowed, so that a test left the threads it set to the next.)"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module (its sibling helpers, ``_hf_runs`` etc., importable
    while it loads)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """``load_benchmark("hf_vision")``: a benchmark script as a module."""
    return _load_benchmark
