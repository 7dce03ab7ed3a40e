"""Faithfulness of the towers to Chandra et al. (2022): closed forms and hypergradient checks.

* ``SGD(α)/SGD(κ)`` follows ``α_t = α_{t−1} + κ⟨g_t, g_{t−1}⟩``, ``w ← w − α_t g_t`` (float64).
* ``SGD/SGD/SGD`` follows the three-level closed form (``h_t = −⟨g_t, g_{t−1}⟩``).
* Each optimiser's hypergradient passes ``torch.autograd.gradcheck`` (float64) on one
  differentiable step with respect to its raw hyperparameters.
* With fixed hyperparameters each rule equals its ``torch.optim`` twin (float64, 5 steps).

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_faithful.py``
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperfree import hyper

F64 = torch.float64


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=gen, dtype=F64),
             torch.randn(16, 2, generator=gen, dtype=F64))
            for _ in range(n)]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)).double()


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).mean()


def _flat_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(_loss(model(x), y), list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def _closed_form(alpha: float, kappas: list[float], steps: int) -> tuple[nn.Module, list[float]]:
    """Hand-derived SGD tower (levels SGD(α)/SGD(κ)[/SGD(ν)]) on the plain model."""
    model = _model()
    hyp = [alpha] + kappas  # hyp[0] = α, hyp[1] = κ, hyp[2] = ν
    g_prev, h_prev = None, None
    for x, y in _batches(steps):
        g = _flat_grad(model, x, y)
        h = None if g_prev is None else -float(g @ g_prev)  # ∂L_t/∂α_{t-1}
        if len(hyp) == 3 and h is not None and h_prev is not None:
            hyp[1] = hyp[1] + hyp[2] * h * h_prev  # κ moves first (top-down)
        if h is not None:
            hyp[0] = hyp[0] - hyp[1] * h
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(
                torch.nn.utils.parameters_to_vector(model.parameters()) - hyp[0] * g,
                model.parameters())
        g_prev, h_prev = g, h
    return model, hyp


@pytest.mark.parametrize("text,alpha,kappas", [
    ("sgd(0.05)/sgd(0.02)", 0.05, [0.02]),
    ("sgd(0.05)/sgd(0.02)/sgd(0.5)", 0.05, [0.02, 0.5]),
])
def test_sgd_tower_matches_closed_form(text: str, alpha: float, kappas: list[float]) -> None:
    steps = 12
    want_model, want_hyp = _closed_form(alpha, list(kappas), steps)
    net = hyper.HyperModule(_model(), hyper.parse(text))
    for x, y in _batches(steps):
        net.step(_loss(net(x), y))
    got = [level["lr"] for level in net.hyperparameters()]
    assert got[0] != pytest.approx(alpha, rel=1e-3)  # the step size really moved
    assert got == pytest.approx(want_hyp, rel=1e-12, abs=1e-15)
    for p, q in zip(net.model.parameters(), want_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


_GRADCHECK = ["sgd(0.1)", "sgd(0.1, 0.7)", "sgdperparam(0.1)", "adagrad(0.1)", "rmsprop(0.1, 0.8)",
              "rmsproplr(0.1, 0.8)", "adam(0.1, (0.8, 0.9))", "adamlr(0.1, (0.8, 0.9))"]


@pytest.mark.parametrize("text", _GRADCHECK)
def test_hypergradient_gradcheck(text: str) -> None:
    """``L(w + δ(h(raw)))`` w.r.t. the raw hyperparameters, including a zero-gradient entry."""
    opt = hyper.parse(text)
    sizes = [3, 4]
    opt.bind(len(sizes), torch.zeros(1, dtype=F64))
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(7, generator=gen, dtype=F64)
    g[2] = 0.0
    w, target = torch.randn(7, generator=gen, dtype=F64), torch.randn(7, generator=gen, dtype=F64)
    warm = torch.randn(7, generator=gen, dtype=F64).abs() * (g != 0)
    _, state = opt.delta(warm, sizes)  # a non-trivial optimiser state
    state = {k: v.detach() for k, v in state.items()}

    def loss(raw: torch.Tensor) -> torch.Tensor:
        delta, _ = opt.delta(g, sizes, opt.natural(raw), state=state, step=3)
        return ((w + delta - target) ** 2).sum()

    raw = opt.raw.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (raw,), eps=1e-6, atol=1e-7)
    assert torch.autograd.grad(loss(raw), raw)[0].abs().sum() > 0  # a real dependence


_TWINS = [
    ("sgd(0.05)", lambda p: torch.optim.SGD(p, lr=0.05)),
    ("sgd(0.05, 0.9)", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("sgdperparam(0.05)", lambda p: torch.optim.SGD(p, lr=0.05)),
    ("adagrad(0.05)", lambda p: torch.optim.Adagrad(p, lr=0.05)),
    ("rmsprop(0.01, 0.9)", lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9)),
    ("rmsproplr(0.01, 0.9)", lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9)),
    ("adam(0.01, (0.8, 0.99))", lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99))),
    ("adamlr(0.01)", lambda p: torch.optim.Adam(p, lr=0.01)),
]


@pytest.mark.parametrize("text,make", _TWINS)
def test_fixed_hyperparameters_match_torch_optim(text: str, make) -> None:
    net = hyper.HyperModule(_model(), hyper.parse(text))
    ref = _model()
    opt = make(ref.parameters())
    for x, y in _batches(5):
        net.step(_loss(net(x), y))
        opt.zero_grad()
        _loss(ref(x), y).backward()
        opt.step()
    for p, q in zip(net.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("text", ["sgd(0.05)/sgd(0.02)", "sgdperparam(0.05)/adam(1e-3)/sgd(1e-4)",
                                  "adam(0.01, (0.8, 0.9))/sgd(1e-3)", "adamlr(0.01)/sgd(1e-3)",
                                  "adam(0.01)/adam(1e-3)/sgd(1e-4)"])
def test_fused_level0_matches_reference_path(text: str) -> None:
    """The fused level-0 SGD / Adam (in place, analytic hypergradient) equals plain autograd."""
    nets = [hyper.HyperModule(_model(), hyper.parse(text), fused=f) for f in (True, False)]
    for x, y in _batches(8):
        for net in nets:
            net.step(_loss(net(x), y))
    assert nets[0]._tower.fast_path() and not nets[1]._tower.fast_path()
    fast, ref = (net.hyperparameters() for net in nets)
    assert fast[0]["lr"] not in (0.05, 0.01)
    for a, b in zip(fast, ref):
        assert a == pytest.approx(b, rel=1e-10)
    for p, q in zip(nets[0].model.parameters(), nets[1].model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
