"""Gradient clipping in towers (``HyperModule(..., clip_grad_norm=c)``), float64.

* Hand computation: ``SGD(α)/SGD(κ)[/SGD(ν)]`` with clipping follows
  ``ĝ_t = g_t·min(1, c/(‖g_t‖+1e-6))``, ``α_t = α_{t−1} + κ⟨g_t, ĝ_{t−1}⟩``, ``w ← w − α_t ĝ_t``:
  the update uses the clipped gradient, the hypergradient the unclipped incoming one (the exact
  derivative of the loss through the update applied); 1e-12. The other definition (clipped
  incoming gradient) is checked to give a different answer, so the test can tell them apart.
* Fixed hyperparameters + clipping equal ``torch.optim`` + ``torch.nn.utils.clip_grad_norm_``.
* The fused level 0 with clipping equals the reference path.
* A bad ``clip_grad_norm`` raises a ValueError naming it.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_clipping.py``
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperfree import hyper

F64 = torch.float64
CLIP = 0.3


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 5, generator=gen, dtype=F64),
             3 * torch.randn(16, 2, generator=gen, dtype=F64)) for _ in range(n)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)).double()


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).mean()


def _hand(alpha: float, kappas: list[float], steps: int, clipped_incoming: bool = False
          ) -> tuple[nn.Module, list[float], int]:
    """The clipped SGD tower by hand on the plain model; returns (model, [α, κ, ν], clips)."""
    model, hyp = _model(), [alpha] + kappas
    params = list(model.parameters())
    clipped_prev, h_prev, clips = None, None, 0
    for x, y in _batches(steps):
        g = torch.cat([gi.reshape(-1) for gi in torch.autograd.grad(_loss(model(x), y), params)])
        coef = min(1.0, CLIP / (float(g.norm()) + 1e-6))
        clips += coef < 1
        clipped = g * coef
        incoming = clipped if clipped_incoming else g
        h = None if clipped_prev is None else -float(incoming @ clipped_prev)  # ∂L_t/∂α_{t−1}
        if len(hyp) == 3 and h is not None and h_prev is not None:
            hyp[1] = hyp[1] + hyp[2] * h * h_prev
        if h is not None:
            hyp[0] = hyp[0] - hyp[1] * h
        with torch.no_grad():
            flat = nn.utils.parameters_to_vector(params) - hyp[0] * clipped
            nn.utils.vector_to_parameters(flat, params)
        clipped_prev, h_prev = clipped, h
    return model, hyp, clips


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("text,alpha,kappas", [
    ("sgd(0.05)/sgd(0.02)", 0.05, [0.02]),
    ("sgd(0.05)/sgd(0.02)/sgd(0.5)", 0.05, [0.02, 0.5]),
])
def test_clipped_tower_matches_hand_computation(text: str, alpha: float, kappas: list[float],
                                                fused: bool) -> None:
    steps = 12
    want_model, want_hyp, clips = _hand(alpha, list(kappas), steps)
    assert clips >= steps // 2  # clipping really acts
    net = hyper.HyperModule(_model(), hyper.parse(text), clip_grad_norm=CLIP, fused=fused)
    for x, y in _batches(steps):
        net.step(_loss(net(x), y))
    got = [level["lr"] for level in net.hyperparameters()]
    assert got == pytest.approx(want_hyp, rel=1e-12, abs=1e-15)
    for p, q in zip(net.model.parameters(), want_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    _, other, _ = _hand(alpha, list(kappas), steps, clipped_incoming=True)
    assert got[0] != pytest.approx(other[0], rel=1e-6)  # the two definitions differ here


@pytest.mark.parametrize("text,make", [
    ("sgd(0.05)", lambda p: torch.optim.SGD(p, lr=0.05)),
    ("sgd(0.05, 0.9)", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("adam(0.01)", lambda p: torch.optim.Adam(p, lr=0.01)),
])
def test_fixed_hyperparameters_match_torch_clip_grad_norm(text: str, make) -> None:
    net = hyper.HyperModule(_model(), hyper.parse(text), clip_grad_norm=CLIP)
    ref = _model()
    opt = make(ref.parameters())
    for x, y in _batches(6):
        net.step(_loss(net(x), y))
        opt.zero_grad()
        _loss(ref(x), y).backward()
        assert nn.utils.clip_grad_norm_(ref.parameters(), CLIP) > CLIP
        opt.step()
    for p, q in zip(net.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("text", ["adam(0.01)/sgd(1e-3)", "sgdperparam(0.05)/adam(1e-3)"])
def test_fused_level0_with_clipping_matches_reference(text: str) -> None:
    nets = [hyper.HyperModule(_model(), hyper.parse(text), clip_grad_norm=CLIP, fused=f)
            for f in (True, False)]
    for x, y in _batches(8):
        for net in nets:
            net.step(_loss(net(x), y))
    for a, b in zip(*(net.hyperparameters() for net in nets)):
        assert a == pytest.approx(b, rel=1e-10)
    for p, q in zip(nets[0].model.parameters(), nets[1].model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "1"])
def test_bad_clip_grad_norm_names_the_value(bad) -> None:
    with pytest.raises(ValueError, match=f"clip_grad_norm must be .*got {bad!r}"):
        hyper.HyperModule(_model(), hyper.parse("sgd/sgd"), clip_grad_norm=bad)
