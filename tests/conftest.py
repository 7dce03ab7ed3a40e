"""Suite-wide settings: one torch thread per test process.

The suite runs under ``pytest -n 2`` on a 2-core machine; two workers with two intra-op threads
each oversubscribe the cores and make small kernels several times slower.
"""
import os

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)
