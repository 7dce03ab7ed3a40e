"""The ``fading`` estimate of G (preset ``spectral-fading``; docs/agd-stability.md §22):

    H ← β H + (1 − β) G_self,  n ← n + 1,  Ḡ = H / (1 − β^n)
    P the largest Ḡ so far, M the least Ḡ since P (M = Ḡ at a new peak)
    G = G_self · M / Ḡ

Checked against numbers worked by hand on both number systems of the step (numpy on the host,
0-dim tensors on a device), then on a model: fast path = reference twin in float64 while the
cap binds, the cap leaves a falling G alone and holds a rising one, and a run resumed from a
``state_dict`` taken while it binds equals one never stopped.
Run: ``pytest tests/optim/test_agd_fading.py``.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS, Fading
from hyperfree.optim._xp import DEVICE, HOST

from .reference import make_agd

# β = 1/2 and G_self = 4, 2, 1, 3, 8, worked by hand:
#   Ḡ = 4, 8/3, 12/7, 12/5, 164/31; the peak 4 until step 5 (a new peak: 164/31 > 4);
#   the least since the peak 4, 8/3, 12/7, 12/7, then 164/31
#   G = 4, 2, 1, 3 · (12/7)/(12/5) = 15/7, 8 (a new peak is not held)
HAND = [(4.0, 4.0), (2.0, 2.0), (1.0, 1.0), (3.0, 15 / 7), (8.0, 8.0)]


def _run(xp, sequence, oks=None):
    piece = Fading(0.5)
    state = piece.init([torch.zeros(1, dtype=torch.float64)])
    out = []
    for i, g in enumerate(sequence):  # the step runs the piece under xp.quiet() (0/0 handled)
        ok = True if oks is None else oks[i]
        with xp.quiet():
            out.append(_one(xp, piece, state, g, ok))
    return out, [float(t) for t in state]


def _one(xp, piece, state, g, ok) -> float:
    if xp is DEVICE:
        return float(piece.G(xp, state, torch.tensor(g, dtype=torch.float64), None,
                             torch.tensor(ok), None))
    return float(piece.G(xp, state, np.float64(g), None, np.bool_(ok), None))


@pytest.mark.parametrize("xp", [HOST, DEVICE], ids=["host", "device"])
def test_the_estimate_equals_the_numbers_worked_by_hand(xp):
    got, _ = _run(xp, [g for g, _ in HAND])
    assert got == pytest.approx([want for _, want in HAND], rel=1e-12)


@pytest.mark.parametrize("xp", [HOST, DEVICE], ids=["host", "device"])
def test_a_run_that_starts_at_zero_is_not_held_at_zero(xp):
    # a network that starts at a saddle (a zero head): G_self rises from 0 to its peak first
    got, _ = _run(xp, [0.0, 0.0, 1.0, 2.0, 3.0])
    assert got == [0.0, 0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("xp", [HOST, DEVICE], ids=["host", "device"])
def test_a_skipped_step_leaves_the_state_untouched(xp):
    _, clean = _run(xp, [4.0, 2.0, 1.0])
    _, skipped = _run(xp, [4.0, 2.0, float("nan"), 1.0], oks=[True, True, False, True])
    assert skipped == clean


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(2))
    return model


# the loss's scale per step: G falls for three steps, then rises (the cap binds), then falls
SCALES = [1.0, 0.6, 0.4, 3.0, 3.0, 0.5]


def _step(model: nn.Module, opt: hyperfree.AGD, t: int) -> float:
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    opt.zero_grad()
    (SCALES[t] * ((model(x) - y) ** 2).mean()).backward()
    opt.step()
    return float(opt.eta)


def test_fast_path_equals_the_reference_twin_while_the_cap_binds():
    model, twin = _model(), _model()
    fast = make_agd(model, preset="spectral-fading", path="fast")
    ref = make_agd(twin, preset="spectral-fading", path="reference")
    for t in range(len(SCALES)):
        assert _step(model, fast, t) == pytest.approx(_step(twin, ref, t), rel=1e-10, abs=1e-14)
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    held = fast._pieces.fields["estimate"]
    assert 0 < float(held["least"]) < float(held["peak"])  # the cap was engaged


def test_the_cap_leaves_a_falling_g_alone_and_holds_a_rising_one():
    model, other = _model(), _model()
    fading = hyperfree.AGD(model, preset="spectral-fading")
    plain = hyperfree.AGD(other, preset="spectral-average")
    assert PRESETS["spectral-fading"].source == PRESETS["spectral-average"].source
    for t in range(3):  # G falls: the same step, bit for bit
        assert _step(model, fading, t) == _step(other, plain, t)
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
    # the rise is held (by M/Ḡ < 1; the average of β = 0.99 has moved 1% of the way)
    assert _step(model, fading, 3) < _step(other, plain, 3)


def test_resuming_while_the_cap_binds_equals_never_stopping():
    model = _model()
    opt = hyperfree.AGD(model, preset="spectral-fading")
    for t in range(4):
        _step(model, opt, t)
    resumed_model = copy.deepcopy(model)
    resumed = hyperfree.AGD(resumed_model, preset="spectral-fading")
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    for t in range(4, len(SCALES)):
        assert _step(resumed_model, resumed, t) == _step(model, opt, t)
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)
