"""Presets are rows of pieces, and the optimiser around the step is bookkeeping that any row fits.

* A row nobody registered — the Frobenius family with momentum 0.9, the fresh estimate averaged
  with its own β = 0.8 and the ball retraction — takes the same steps as the reference twin
  (float64, every kind of :class:`tests.optim.conftest.Zoo`), so the pieces compose freely.
* Its state (momentum buffers, the count, the fresh average) round-trips through
  ``state_dict`` generically: a resume equals never stopping; and a state_dict in the format of
  earlier versions (``momentum_steps``, ``fresh_ema``) resumes the same trajectory.
* A row that cannot work is refused by name (a lagged estimate without momentum, a piece in the
  wrong slot); ``ns_steps`` is the Spectral piece's and changes the step as the twin says.
* The plan cache is bounded: stepping twelve different sets of parameters keeps at most eight
  plans, and every step still equals the twin's.
Run: ``pytest tests/optim/test_agd_pieces.py``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import (Ball, Fresh, Frobenius, Gradient, Momentum, Preset, SelfEstimate,
                             Spectral, Sphere)

from .conftest import Zoo, zoo_loss
from .reference import ReferenceAGD

CUSTOM = Preset("custom", Frobenius(), Momentum(0.9), Fresh(0.8), Ball())


def _zoo_pair():
    torch.manual_seed(0)
    model = Zoo().double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    return model, copy.deepcopy(model)


def _same(model, twin, rtol=1e-9):
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")


def test_an_unregistered_row_of_pieces_equals_the_reference_twin():
    model, twin = _zoo_pair()
    fast, ref = hyperfree.AGD(model, preset=CUSTOM), ReferenceAGD(twin, preset=CUSTOM)
    etas = []
    for t in range(6):
        for m, o in ((model, fast), (twin, ref)):
            o.zero_grad()
            zoo_loss(m, seed=t).backward()
            o.step()
        assert math.isclose(float(fast.eta), float(ref.eta), rel_tol=1e-9, abs_tol=1e-14), t
        etas.append(float(fast.eta))
    assert etas[0] == 0.0 and max(etas) > 0  # lagged: the first step only fills the momentum
    _same(model, twin)
    H = float(fast._pieces.fields["estimate"]["H"])
    assert H != 0.0 and math.isclose(H, float(ref._pieces.fields["estimate"]["H"]), rel_tol=1e-9)


@pytest.mark.parametrize("legacy", [False, True], ids=["pieces", "earlier-format"])
def test_every_piece_state_resumes_exactly(legacy):
    model, _ = _zoo_pair()
    opt = hyperfree.AGD(model, preset=CUSTOM)
    for t in range(3):
        opt.zero_grad()
        zoo_loss(model, seed=t).backward()
        opt.step()
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    assert set(saved[1]["agd"]["state"]) == {"source", "estimate"}
    assert int(saved[1]["agd"]["state"]["source"]["count"]) == 3
    if legacy:  # what a checkpoint of the previous version holds
        pieces = saved[1]["agd"].pop("state")
        saved[1]["agd"].update(momentum_steps=int(pieces["source"]["count"]),
                               fresh_ema=float(pieces["estimate"]["H"]))
    for t in range(3, 6):
        opt.zero_grad()
        zoo_loss(model, seed=t).backward()
        opt.step()
    other = Zoo().double()
    other.load_state_dict(saved[0])
    opt2 = hyperfree.AGD(other, preset=CUSTOM)
    opt2.load_state_dict(saved[1])
    for t in range(3, 6):
        opt2.zero_grad()
        zoo_loss(other, seed=t).backward()
        opt2.step()
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)


def test_rows_that_cannot_work_are_refused_by_name():
    with pytest.raises(ValueError, match="needs a Momentum source"):
        Preset("bad", Spectral(), Gradient(), Fresh())
    with pytest.raises(ValueError, match="retraction must be one of Sphere, Ball, Rotation, None"):
        Preset("bad", Spectral(), retraction=Momentum())
    with pytest.raises(ValueError, match="source must be one of Gradient, Momentum"):
        Preset("bad", Spectral(), SelfEstimate())
    with pytest.raises(ValueError, match="beta must be a number in \\(0, 1\\)"):
        Momentum(1.0)
    with pytest.raises(ValueError, match="ns_steps"):
        Spectral(0)


def test_ns_steps_is_the_spectral_pieces_and_the_twin_agrees():
    model, twin = _zoo_pair()
    three = hyperfree.AGD(model, preset="spectral-sphere", ns_steps=3)
    assert three.preset.family == Spectral(3) and three.ns_steps == 3
    assert three.preset.retraction == Sphere() and three.preset.name == "spectral-sphere"
    five = hyperfree.AGD(copy.deepcopy(model), preset="spectral-sphere")
    ref = ReferenceAGD(twin, preset="spectral-sphere", ns_steps=3)
    zoo_loss(model).backward()
    zoo_loss(twin).backward()
    three.step()
    ref.step()
    assert math.isclose(float(three.eta), float(ref.eta), rel_tol=1e-10)
    _same(model, twin)
    five_model = next(iter(five.param_groups))["params"]
    for p in five_model:
        p.grad = torch.zeros_like(p) + 0.1
    five.step()
    assert not math.isclose(float(five.eta), float(three.eta), rel_tol=1e-3)
    assert hyperfree.AGD(nn.Linear(3, 3), preset="paper", ns_steps=3).ns_steps == 0


def test_plan_cache_is_bounded_and_every_subset_steps_like_the_twin():
    torch.manual_seed(0)
    layers = [nn.Linear(5, 5, bias=False).double() for _ in range(12)]
    model = nn.Sequential(*layers)
    twin = copy.deepcopy(model)
    fast, ref = (hyperfree.AGD(model, preset="spectral-momentum"),
                 ReferenceAGD(twin, preset="spectral-momentum"))
    gen = torch.Generator().manual_seed(3)
    for t in range(12):  # twelve different sets of parameters with a gradient
        for m, o in ((model, fast), (twin, ref)):
            o.zero_grad(set_to_none=True)
        for i in range(12):
            if i != t:
                g = torch.randn(5, 5, generator=gen, dtype=torch.float64)
                model[i].weight.grad, twin[i].weight.grad = g.clone(), g.clone()
        fast.step()
        ref.step()
        assert math.isclose(float(fast.eta), float(ref.eta), rel_tol=1e-9), t
    assert len(fast._plans) <= 8
    _same(model, twin)
