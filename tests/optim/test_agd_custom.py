"""A custom module: unknown parameters are refused, declared ones train by their rule.

* strictly (``infer=False``: table and declarations only; AGD(model) reads unknown kinds from
  the forward, tests/optim/test_agd_infer.py), an unregistered parameter gets a ``ValueError``
  naming the parameter, its shape, its owner type and both declaration routes
  (``register_kinds`` and ``AGD(model, kinds=...)``);
* after ``register_kinds`` (by class or by import path; the registry is global, so the
  ``restore_kind_rules`` fixture puts it back) the model trains — loss falls over a few steps —
  and its first step equals the documented gain/bias rule; subclasses inherit a registration;
* per-parameter ``kinds=`` works the same way, and a misspelt name is refused;
* a parameter tied between two owners whose kinds conflict with no stated resolution raises
  (strictly), and a declaration resolves it.
Run: ``pytest tests/optim/test_agd_custom.py``.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import Kind, register_kinds

from . import agd_spec as S


class ScaleShift(nn.Module):
    """``x * scale + shift``: a gain and a bias, but AGD cannot know that unless told."""

    def __init__(self, d: int):
        super().__init__()
        self.scale = nn.Parameter(1 + 0.1 * torch.randn(d))
        self.shift = nn.Parameter(0.1 * torch.randn(d))

    def forward(self, x):
        return x * self.scale + self.shift


class MyScaleShift(ScaleShift):
    pass


def _model(cls=ScaleShift):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), cls(6), nn.Linear(6, 2)).double()


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    return x, torch.sin(x[:, :2] * 2) + 0.5


def _losses(model, opt, steps=12):
    x, y = _data()
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        out.append(float(loss.detach()))
        opt.step()
    return out


def _rules(model):
    return {"0.weight": S.linear((6, 4)), "0.bias": S.bias((6,)), "2.scale": S.gain((6,)),
            "2.shift": S.bias((6,)), "3.weight": S.linear((2, 6)), "3.bias": S.bias((2,))}


def _first_step_matches_rule(model, make_opt):
    x, y = _data()
    ((model(x) - y) ** 2).mean().backward()
    params = dict(model.named_parameters())
    spec = S.spec_step(params, _rules(model), "frobenius")
    opt = make_opt()
    opt.step()
    assert opt.L == spec.L == 3
    S.assert_step_equals(params, spec)


def test_unregistered_parameter_raises_naming_it_its_owner_and_both_routes():
    with pytest.raises(ValueError) as err:
        hyperfree.AGD(_model(), infer=False)
    msg = str(err.value)
    for part in ("'2.scale'", "(6,)", "ScaleShift", "register_kinds(ScaleShift",
                 "kinds={'2.scale'", "gain", "bias"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize("route", ["class", "path"])
def test_registered_module_type_trains(restore_kind_rules, route):
    key = ScaleShift if route == "class" else f"{__name__}.ScaleShift"
    register_kinds(key, {"scale": "gain", "shift": "bias"})
    model = _model()
    _first_step_matches_rule(model, lambda: hyperfree.AGD(model, preset="paper"))
    model = _model()
    losses = _losses(model, hyperfree.AGD(model))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_subclass_inherits_a_registration(restore_kind_rules):
    register_kinds(ScaleShift, {"scale": "gain", "shift": Kind("bias")})
    model = _model(MyScaleShift)
    _first_step_matches_rule(model, lambda: hyperfree.AGD(model, preset="paper"))


def test_registration_is_restored_by_the_fixture(restore_kind_rules):
    assert restore_kind_rules.kinds_for(ScaleShift(2)) is None  # no leak from other tests
    register_kinds(ScaleShift, {"scale": "gain", "shift": "bias"})
    assert restore_kind_rules.kinds_for(ScaleShift(2)) is not None


def test_per_parameter_declaration_trains():
    kinds = {"2.scale": "gain", "2.shift": "bias"}
    model = _model()
    _first_step_matches_rule(model, lambda: hyperfree.AGD(model, kinds=kinds, preset="paper"))
    model = _model()
    losses = _losses(model, hyperfree.AGD(model, kinds=kinds))
    assert losses[-1] < 0.7 * losses[0], losses
    with pytest.raises(ValueError, match=r"'2\.scal'.*no trainable parameter"):
        hyperfree.AGD(_model(), kinds={"2.scal": "gain", "2.scale": "gain", "2.shift": "bias"})


class GainTiedToBias(nn.Module):
    """A LayerNorm gain that is also a Linear's bias: gain and bias, no stated resolution."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(4)
        self.lin = nn.Linear(4, 4)
        self.lin.bias = self.ln.weight

    def forward(self, x):
        return self.lin(self.ln(x))


def test_tied_parameter_with_conflicting_kinds_raises_until_declared():
    model = GainTiedToBias().double()
    with pytest.raises(ValueError, match=r"tied parameter 'ln\.weight'.*bias.*gain.*kinds="):
        hyperfree.AGD(model, infer=False)
    opt = hyperfree.AGD(model, kinds={"lin.bias": "gain"}, preset="paper")  # any name does
    assert opt.L == 1 + 1  # lin.weight and the (once-counted) gain; ln.bias is a bias
    x = torch.randn(5, 4, dtype=torch.float64)
    model(x).square().sum().backward()
    params = dict(model.named_parameters())
    assert sorted(params) == ["lin.weight", "ln.bias", "ln.weight"]
    spec = S.spec_step(params, {"ln.weight": S.gain((4,)), "ln.bias": S.bias((4,)),
                                "lin.weight": S.linear((4, 4))}, "frobenius")
    opt.step()
    S.assert_step_equals(params, spec)
