"""AGD's trajectory equals the paper's formula (SPEC §1.1), stated here independently.

For an FCN, a VGG-style net and a pre-activation ResNet, 20 AGD steps in float32 are compared
with a second copy of the network updated by a literal, slice-by-slice float64 transcription of
the formula: relative error of the weights <= 1e-5. Run: ``pytest tests/optim/test_agd_exact.py``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

import hyperfree

from .reference import make_agd

from .conftest import make


def formula_step(params: list[torch.Tensor], gain: float = 1.0) -> float:
    """The SPEC formula, slice by slice, in float64 Python loops. Returns eta."""
    L = len(params)

    def slices(t):
        if t.dim() == 2:
            return [(slice(None), slice(None))]
        return [(slice(None), slice(None), i, j) for i in range(t.shape[2])
                for j in range(t.shape[3])]

    def s_of(t):
        d_out, d_in = t.shape[0], t.shape[1]
        k = 1 if t.dim() == 2 else t.shape[2] * t.shape[3]
        return math.sqrt(d_out / d_in) / math.sqrt(k)

    G = 0.0
    for p in params:
        g = p.grad.double()
        G += s_of(p) * sum(math.sqrt(float((g[idx] ** 2).sum())) for idx in slices(p))
    G /= L
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    with torch.no_grad():
        for p in params:
            g = p.grad.double()
            new = p.double().clone()
            for idx in slices(p):
                n = math.sqrt(float((g[idx] ** 2).sum()))
                if n > 0:
                    new[idx] -= gain * eta / L * s_of(p) * g[idx] / n
            p.copy_(new.to(p.dtype))
    return eta


def square_loss(out: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, out.shape[1], (out.shape[0],), generator=gen)
    target = torch.nn.functional.one_hot(y, out.shape[1]).float() * math.sqrt(out.shape[1])
    return ((out - target) ** 2).mean()


@pytest.mark.parametrize("kind", ["fcn", "vgg", "resnet"])
@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_agd_matches_formula_after_20_steps(kind, path, gain):
    torch.manual_seed(0)
    model, x = make(kind)
    opt = make_agd(model, preset="paper", gain=gain, path=path)
    opt.init_weights()
    twin = copy.deepcopy(model)
    twin_params = [p for p in twin.parameters()]
    initial = [p.detach().clone() for p in model.parameters()]
    for t in range(20):
        xb = x + 0.1 * t
        opt.zero_grad()
        square_loss(model(xb), t).backward()
        assert opt.step() is None  # torch's convention: the loss, and there is no closure
        eta = opt.eta
        for p in twin_params:
            p.grad = None
        square_loss(twin(xb), t).backward()
        eta_ref = formula_step(twin_params, gain)
        assert eta.dim() == 0 and math.isclose(float(eta), eta_ref, rel_tol=1e-5)
    with torch.no_grad():
        for (name, p), q, p0 in zip(model.named_parameters(), twin_params, initial):
            rel = float((p - q).norm() / q.norm())
            assert rel <= 1e-5, f"{name}: relative error {rel:.2e}"
            assert float((p - p0).norm() / p0.norm()) > 1e-3, f"{name} did not move"


def test_eta_formula_and_L_counts_params_without_grad():
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(4, 6))
    b = torch.nn.Parameter(torch.randn(3, 2, 3, 3))
    c = torch.nn.Parameter(torch.randn(5, 5))
    a.grad = torch.randn(4, 6)
    b.grad = torch.randn(3, 2, 3, 3)
    c_before = c.detach().clone()
    opt = hyperfree.AGD([a, b, c], kinds={a: "linear", b: "conv", c: "linear"}, preset="paper")
    G = (math.sqrt(4 / 6) * float(a.grad.norm())
         + math.sqrt(3 / 2) / 3 * float(b.grad.norm(dim=(0, 1)).sum())) / 3  # L = 3, not 2
    opt.step()
    eta = opt.eta
    assert math.isclose(float(eta), math.log((1 + math.sqrt(1 + 4 * G)) / 2), rel_tol=1e-6)
    assert torch.equal(c.detach(), c_before)  # no grad: not updated
