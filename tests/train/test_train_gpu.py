"""On a CUDA device (skipped without one): the harness trains with data, model and metrics on
the GPU and "auto" picks cuda."""
from __future__ import annotations

import math

import pytest
import torch
from _train_helpers import tiny_config, tiny_image_bundle

from hyperfree.train import resolve_device, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_trains_on_cuda() -> None:
    assert resolve_device("auto").type == "cuda"
    cpu = tiny_image_bundle()
    bundle = type(cpu)(cpu.info, *(t.cuda() for t in (cpu.train_x, cpu.train_y, cpu.test_x,
                                                       cpu.test_y)))
    history = train(tiny_config(device="cuda", epochs=1), data=bundle)
    assert next(history.model.parameters()).is_cuda
    rec = history.records[0]
    assert math.isfinite(rec["train_loss"]) and rec["eta_min"] > 0
