"""AGD on a CUDA device (marker ``gpu``; skipped without one).

* The fast path (device guard: every scalar a 0-dim tensor on the GPU) equals the reference
  twin in float64 for EVERY preset on :class:`tests.optim.conftest.Zoo` (every kind; cuDNN off
  so that the RNNs and convs run the same float64 kernels in both models), six steps, 1e-9.
* No host synchronisation after the first step: steps 2..4 of every preset run under
  ``torch.cuda.set_sync_debug_mode("error")`` (gradients computed outside it).
* A NaN gradient is skipped on the device, without a sync: weights and momentum unchanged,
  η = 0, and ``skipped_steps`` (which waits for the flag) counts it, with the warning.
Run on a GPU machine: ``pytest -m gpu tests/optim/test_agd_gpu.py``.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import hyperfree
from hyperfree.optim import PRESETS

from .conftest import Zoo, zoo_inputs
from .reference import ReferenceAGD

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _loss(model: torch.nn.Module, seed: int, device: torch.device) -> torch.Tensor:
    """tests.optim.conftest.zoo_loss with its batch on ``device``."""
    ids, img, sig, vol = (t.to(device) for t in zoo_inputs(seed))
    dtype = next(model.parameters()).dtype
    logits, a, b, c = model(ids, img.to(dtype), sig.to(dtype), vol.to(dtype))
    gen = torch.Generator().manual_seed(seed + 1)
    y = torch.randint(0, Zoo.V, (10,), generator=gen).to(device)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y)
    return ce + sum(((t - 0.3) ** 2).mean() for t in (a, b, c))


def _zoo(device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Zoo().to(dtype)
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    return model.to(device)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_fast_path_equals_reference_on_cuda(preset, device="cuda"):
    dev = torch.device(device)
    model = _zoo(device, torch.float64)
    twin = copy.deepcopy(model)
    fast = hyperfree.AGD(model, preset=preset)
    ref = ReferenceAGD(twin, preset=preset)
    with torch.backends.cudnn.flags(enabled=False):
        for t in range(6):
            for m, o in ((model, fast), (twin, ref)):
                o.zero_grad()
                _loss(m, t, dev).backward()
                o.step()
            assert math.isclose(float(fast.eta), float(ref.eta), rel_tol=1e-9), t
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
        a, b = fast.state[p].get("momentum_buffer"), ref.state[q].get("momentum_buffer")
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    assert fast.skipped_steps == 0


@pytest.mark.parametrize("preset", list(PRESETS))
def test_no_host_sync_after_first_step(preset, device="cuda"):
    dev = torch.device(device)
    model = _zoo(device, torch.float32)
    opt = hyperfree.AGD(model, preset=preset)
    for t in range(4):
        opt.zero_grad()
        _loss(model, t, dev).backward()
        if t == 0:
            opt.step()  # may set up lazily (pinned flag buffer, ...)
            torch.cuda.synchronize()
            continue
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert opt.steps == 4 and opt.skipped_steps == 0 and float(opt.eta) > 0


@pytest.mark.parametrize("preset", ["paper", "spectral-sphere"])
def test_nonfinite_step_skipped_on_device(preset, device="cuda"):
    dev = torch.device(device)
    model = _zoo(device, torch.float32)
    opt = hyperfree.AGD(model, preset=preset)
    opt.zero_grad()
    _loss(model, 0, dev).backward()
    opt.step()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    momentum = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()
                if "momentum_buffer" in opt.state[p]}
    opt.zero_grad()
    _loss(model, 1, dev).backward()
    model.lin.weight.grad[0, 0] = float("nan")
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert opt.skipped_steps == 1  # waits for the flag
    assert any("AGD skipped a step" in str(w.message) for w in caught)
    assert float(opt.eta) == 0.0
    for n, p in model.named_parameters():
        assert torch.equal(p, weights[n]), n
        if n in momentum:
            assert torch.equal(opt.state[p]["momentum_buffer"], momentum[n]), n
