"""Suite-wide settings: one torch thread per test process.

The suite runs under ``pytest -n 2`` on a 2-core machine; two workers with two intra-op threads
each oversubscribe the cores and make small kernels several times slower. The ``hyperfree``
command picks its own thread count when it is not given ``--threads``, so every test ends by
setting it back to 1.
"""
import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    yield
    torch.set_num_threads(1)
