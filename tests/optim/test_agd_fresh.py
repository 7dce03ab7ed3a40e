"""The ``fresh`` estimate of G (preset ``spectral-fresh``; docs/agd-stability.md §4), written
out independently with the doc-transcription helpers of ``agd_spec``:

    step 1: no direction yet — η = 0, nothing moves, m ← (1 − β) g₁
    step t: D from m_{t−1}; F = Σ σ⟨g_t, D⟩/L; H ← βH + (1 − β)F; G = max(0, H/(1 − β^k)),
            k = t − 1; W ← W − (η/L)·σ·D; then m ← βm + (1 − β) g_t

Also: the estimate's state resumes exactly, a non-finite gradient leaves H and m untouched, and
on pure noise G (hence η) falls towards 0 where the self estimate of ``spectral-momentum`` does
not — the property the preset exists for. Run: ``pytest tests/optim/test_agd_fresh.py``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS

from .reference import make_agd

from . import agd_spec as S

BETA = 0.95


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3)).double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(2))
    return model


def _grads(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=gen, dtype=torch.float64), torch.randn(8, 3, generator=gen,
                                                                             dtype=torch.float64)
    model.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_three_steps_equal_the_documented_formula(path):
    assert PRESETS["spectral-fresh"].momentum == BETA
    model = _model()
    opt = make_agd(model, preset="spectral-fresh", path=path)
    rules = S.hand_rules(model, "spectral")
    L = sum(r.mass for r in rules.values())
    weights = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    m = {n: torch.zeros_like(w) for n, w in weights.items()}
    H = 0.0
    for t in range(1, 4):
        g = _grads(model, t)
        opt.step()
        k = t - 1
        F, dirs = 0.0, {}
        for name, rule in rules.items():
            how = S.direction_of(rule, "spectral")
            dirs[name] = []
            for index, tr in rule.cells:
                D = S.unit(S._cell(m[name], index, tr), how)  # from the momentum before g_t
                F += rule.sigma * float((S._cell(g[name].double(), index, tr) * D).sum())
                dirs[name].append((index, tr, D))
        F /= L
        if k > 0:
            H = BETA * H + (1 - BETA) * F
        G = max(0.0, H / (1 - BETA ** k)) if k > 0 else 0.0
        eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
        for name, rule in rules.items():
            for index, tr, D in dirs[name]:
                delta = eta / L * rule.sigma * D
                weights[name][index] -= delta.T if tr else delta
            m[name] = BETA * m[name] + (1 - BETA) * g[name].double()
        assert math.isclose(float(opt.eta), eta, rel_tol=1e-10, abs_tol=1e-14), t
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach().double(), weights[name], rtol=1e-10,
                                       atol=1e-12, msg=lambda msg, n=name: f"step {t} {n}: {msg}")
    assert float(opt.eta) > 0  # it moved after the first step


def test_the_estimate_resumes_exactly_and_ignores_a_nonfinite_step():
    model = _model()
    opt = hyperfree.AGD(model, preset="spectral-fresh")
    for t in range(3):
        _grads(model, t)
        opt.step()
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    assert float(saved[1]["agd"]["state"]["estimate"]["H"]) != 0.0
    ema, buffers = float(opt._pieces.fields["estimate"]["H"]), {n: opt.state[p]["momentum_buffer"].clone()
                                       for n, p in model.named_parameters()}
    before = copy.deepcopy(model.state_dict())
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step()
    assert float(opt._pieces.fields["estimate"]["H"]) == ema
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]) and torch.equal(
            opt.state[p]["momentum_buffer"], buffers[n]), n
    for t in range(3, 6):
        _grads(model, t)
        opt.step()
    other = _model()
    other.load_state_dict(saved[0])
    opt2 = hyperfree.AGD(other, preset="spectral-fresh")
    opt2.load_state_dict(saved[1])
    for t in range(3, 6):
        _grads(other, t)
        opt2.step()
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)


def test_on_pure_noise_the_fresh_estimate_anneals_and_the_self_one_does_not():
    """Gradients of zero mean (fresh noise every step): the first-order decrease any direction
    can promise is 0. The fresh estimate's G tends to 0 (η with it); the self estimate
    ⟨m, D(m)⟩ = ‖m‖_* stays at the noise's level."""
    etas = {}
    for preset in ("spectral-fresh", "spectral-momentum"):
        torch.manual_seed(0)
        layer = nn.Linear(32, 32, bias=False).double()
        opt = hyperfree.AGD(layer, preset=preset)
        gen = torch.Generator().manual_seed(1)
        trace = []
        for _ in range(300):
            layer.weight.grad = torch.randn(32, 32, generator=gen, dtype=torch.float64)
            opt.step()
            trace.append(float(opt.eta))
        etas[preset] = sum(trace[-50:]) / 50
    assert etas["spectral-fresh"] < 0.2 * etas["spectral-momentum"], etas
