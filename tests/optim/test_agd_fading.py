"""The ``fading`` estimate of G (presets ``spectral-fading``, power 1, and ``spectral-damped``,
power 2; docs/agd-stability.md §22–§23):

    H ← β H + (1 − β) G_self,  n ← n + 1,  Ḡ = H / (1 − β^n)
    P the largest Ḡ so far, M the least Ḡ since P (M = Ḡ at a new peak)
    G = G_self · (M / Ḡ)^power

Checked against numbers worked by hand on both number systems of the step (numpy on the host,
0-dim tensors on a device), then on a model: fast path = reference twin in float64 while the
cap binds, the cap leaves a falling G alone, holds a rising one (power 1) and damps it further
(power 2), and a run resumed from a ``state_dict`` taken while it binds equals one never
stopped.
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
from hyperfree.optim.presets import redefinition
from hyperfree.optim._xp import DEVICE, HOST

from .reference import make_agd

# β = 1/2 and G_self = 4, 2, 1, 3, 8, worked by hand:
#   Ḡ = 4, 8/3, 12/7, 12/5, 164/31; the peak 4 until step 5 (a new peak: 164/31 > 4);
#   the least since the peak 4, 8/3, 12/7, 12/7, then 164/31
#   G = 4, 2, 1, 3 · (12/7)/(12/5) = 15/7, 8 (a new peak is not held)
HAND = [(4.0, 4.0), (2.0, 2.0), (1.0, 1.0), (3.0, 15 / 7), (8.0, 8.0)]
# power 2: the same state, the fourth step × (5/7)² instead of 5/7: 3 · 25/49 = 75/49
HAND_DAMPED = [(4.0, 4.0), (2.0, 2.0), (1.0, 1.0), (3.0, 75 / 49), (8.0, 8.0)]
CAPPED = ("spectral-fading", "spectral-damped")


def _run(xp, sequence, oks=None, power=1.0):
    piece = Fading(0.5, power=power)
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
@pytest.mark.parametrize("power, hand", [(1.0, HAND), (2.0, HAND_DAMPED)], ids=["hold", "damp"])
def test_the_estimate_equals_the_numbers_worked_by_hand(xp, power, hand):
    got, state = _run(xp, [g for g, _ in hand], power=power)
    assert got == pytest.approx([want for _, want in hand], rel=1e-12)
    _, held = _run(xp, [g for g, _ in HAND])
    assert state == held  # the power shapes G only, never the state


def test_the_hold_is_defined_as_before_the_damping_so_its_states_resume_silently():
    # a state saved before §23 carries the definition text "Fading(beta=0.99)"
    assert PRESETS["spectral-fading"].definition["estimate"] == "Fading(beta=0.99)"
    assert PRESETS["spectral-damped"].definition["estimate"] == "Fading(beta=0.99, power=2.0)"
    saved = PRESETS["spectral-fading"].definition
    assert redefinition(saved, PRESETS["spectral-fading"]) == ""
    assert redefinition(saved, PRESETS["spectral-damped"]) == \
        "estimate Fading(beta=0.99) -> Fading(beta=0.99, power=2.0)"


@pytest.mark.parametrize("power", [0.5, 0, -1, True, float("inf"), float("nan"), "2"])
def test_a_power_below_one_or_not_a_number_is_refused_by_name(power):
    with pytest.raises(ValueError, match=r"Fading: power must be a number at least 1"):
        Fading(0.5, power=power)


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


@pytest.mark.parametrize("preset", CAPPED)
def test_fast_path_equals_the_reference_twin_while_the_cap_binds(preset):
    model, twin = _model(), _model()
    fast = make_agd(model, preset=preset, path="fast")
    ref = make_agd(twin, preset=preset, path="reference")
    for t in range(len(SCALES)):
        assert _step(model, fast, t) == pytest.approx(_step(twin, ref, t), rel=1e-10, abs=1e-14)
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    held = fast._pieces.fields["estimate"]
    assert 0 < float(held["least"]) < float(held["peak"])  # the cap was engaged


def test_the_cap_leaves_a_falling_g_alone_holds_a_rising_one_and_damps_it_further():
    models = [_model() for _ in range(3)]
    opts = [hyperfree.AGD(m, preset=p) for m, p in
            zip(models, ("spectral-average", "spectral-fading", "spectral-damped"))]
    for name in CAPPED:  # the estimate is the one piece that differs
        assert {k: v for k, v in PRESETS[name].slots.items() if k != "estimate"} == \
            {k: v for k, v in PRESETS["spectral-average"].slots.items() if k != "estimate"}
        assert (PRESETS[name].forks, PRESETS[name].streams) == (True, True)
    for t in range(3):  # G falls: the same step, bit for bit
        etas = [_step(m, o, t) for m, o in zip(models, opts)]
        assert etas[0] == etas[1] == etas[2]
    for p, q, r in zip(*(m.parameters() for m in models)):
        assert torch.equal(p, q) and torch.equal(p, r)
    # the rise is held (by M/Ḡ < 1; the average of β = 0.99 has moved 1% of the way), and
    # damped by (M/Ḡ)²: a shorter step still
    plain, held, damped = (_step(m, o, 3) for m, o in zip(models, opts))
    assert damped < held < plain


@pytest.mark.parametrize("preset", CAPPED)
def test_resuming_while_the_cap_binds_equals_never_stopping(preset):
    model = _model()
    opt = hyperfree.AGD(model, preset=preset)
    for t in range(4):
        _step(model, opt, t)
    resumed_model = copy.deepcopy(model)
    resumed = hyperfree.AGD(resumed_model, preset=preset)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    for t in range(4, len(SCALES)):
        assert _step(resumed_model, resumed, t) == _step(model, opt, t)
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)
