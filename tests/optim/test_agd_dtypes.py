"""Half precision and non-finite gradients.

* float16 / bfloat16: a 256×256 weight whose gradient is 300 in every entry (‖g‖_F = 76,800
  exceeds float16's largest value, 65,504, so ‖g‖² and even ‖g‖ overflow in float16) takes a
  finite step of the documented size — every entry moves by η/256 with
  η = log((1 + √(1 + 4G)) / 2), G = ‖g‖_F — and is NOT reported as skipped: norms are
  accumulated in float32. Both code paths, both families.
* A NaN gradient skips the step: a ``RuntimeWarning`` names the parameter, weights and
  momentum buffers are bitwise unchanged, ``skipped_steps`` counts it, η is 0.
* A skipped step should leave no trace: the next clean step equals the step of an optimiser
  that never saw the bad gradient (the momentum bias correction counts finite gradients only).
Run: ``pytest tests/optim/test_agd_dtypes.py``.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import hyperfree

from .reference import make_agd

PATHS = pytest.mark.parametrize("path", ["fast", "reference"])


@PATHS
@pytest.mark.parametrize("preset", ["paper", "spectral"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_large_finite_half_precision_gradient_takes_a_finite_step(dtype, preset, path):
    torch.manual_seed(0)
    layer = nn.Linear(256, 256, bias=False).to(dtype)
    layer.weight.grad = torch.full((256, 256), 300.0, dtype=dtype)
    if dtype == torch.float16:
        assert not torch.isfinite(layer.weight.grad.norm())  # the naive norm overflows
    w0 = layer.weight.detach().float().clone()
    opt = make_agd(layer, preset=preset, path=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "skipped" warning would fail the test
        opt.step()
    assert opt.skipped_steps == 0
    delta = layer.weight.detach().float() - w0
    assert bool(torch.isfinite(delta).all())
    eta = float(opt.eta)
    if preset == "paper":  # G = σ‖g‖_F = 76,800 (σ = 1, L = 1); D = g/‖g‖_F = 1/256 everywhere
        expected = math.log((1 + math.sqrt(1 + 4 * 76800.0)) / 2)
        assert math.isclose(eta, expected, rel_tol=1e-2), (eta, expected)
        torch.testing.assert_close(delta, torch.full_like(delta, -expected / 256), rtol=0.05,
                                   atol=2e-3)
    else:  # D ≈ polar of a rank-one matrix: every entry ≈ 1/256 (NS: within its band)
        assert 4.5 < eta < 6.0
        move = -delta.mean() * 256 / eta
        assert 0.6 < float(move) < 1.25
        assert float(delta.max()) < 0


def _small(dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)).to(dtype)


def _grads(model, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    model(torch.randn(5, 4, dtype=next(model.parameters()).dtype)).square().sum().backward()


@PATHS
@pytest.mark.parametrize("preset", ["paper-momentum", "spectral-momentum", "spectral-sphere"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_nan_gradient_is_skipped_with_a_warning_and_keeps_momentum(dtype, preset, path):
    model = _small(dtype)
    opt = make_agd(model, preset=preset, path=path)
    for t in range(2):
        _grads(model, t)
        opt.step()
    _grads(model, 2)
    model[2].weight.grad[1, 2] = float("nan")
    weights = copy.deepcopy(model.state_dict())
    buffers = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    with pytest.warns(RuntimeWarning, match=r"AGD skipped a step.*'2\.weight'"):
        opt.step()
    assert float(opt.eta) == 0.0 and opt.skipped_steps == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], buffers[n]), n
    _grads(model, 3)  # and the optimiser still works
    opt.step()
    assert float(opt.eta) > 0 and opt.skipped_steps == 1


@PATHS
@pytest.mark.parametrize("preset", ["paper-momentum", "spectral-momentum"])
def test_skipped_step_leaves_no_trace(preset, path):
    torch.manual_seed(0)
    a = nn.Linear(4, 3, bias=False).double()
    b = copy.deepcopy(a)
    opt_a = make_agd(a, preset=preset, path=path)
    opt_b = make_agd(b, preset=preset, path=path)
    a.weight.grad = torch.full((3, 4), float("nan"), dtype=torch.float64)
    with pytest.warns(RuntimeWarning):
        opt_a.step()
    g = torch.randn(3, 4, dtype=torch.float64)
    a.weight.grad, b.weight.grad = g.clone(), g.clone()
    opt_a.step()
    opt_b.step()
    assert math.isclose(float(opt_a.eta), float(opt_b.eta), rel_tol=1e-12)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-12, atol=0)
