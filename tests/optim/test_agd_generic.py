"""The ``generic`` kind and per-head packed matrices: one step equals the rule written out, and
the fast path equals the reference twin over several steps for every preset.

* ``generic`` (docs/agd-rules.md §4): a tensor of any shape — a ``(1, T, d)`` position table, a
  0-dim scalar, a 3-D tensor — is one cell under its RMS norm: ℓ2 direction, σ = √numel, mass 0
  (``L`` counts only the model's layers), in both families; its move is exactly ``(η/L)·√numel``
  in ℓ2 along minus its gradient;
* a per-head packed projection ``Kind("linear", blocks=3, groups=H)`` (GPT-NeoX's
  ``query_key_value``): ``3·H`` row cells, σ = √(h/d_in) each, mass 3;
* both checked against :mod:`tests.optim.agd_spec` (its own slicing, σ and mass), for the
  ``paper`` and ``spectral`` presets and both code paths, at 1e-10; and fast == reference in
  float64 over six steps for every preset of ``hyperfree.optim.PRESETS``;
* ``init_weights`` leaves a generic tensor at the model's own values.
Run: ``pytest tests/optim/test_agd_generic.py``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS, Kind

from . import agd_spec as S
from .reference import make_agd

FAMILY = {"paper": "frobenius", "spectral": "spectral"}
H, D = 2, 4  # heads, head size of the per-head packed projection


class Odd(nn.Module):
    """A position table, a scalar, a 3-D mixing tensor and a per-head packed projection."""

    def __init__(self, T: int = 3, d: int = H * D) -> None:
        super().__init__()
        self.inp = nn.Linear(5, d)
        self.pos = nn.Parameter(0.1 * torch.randn(1, T, d))
        self.temp = nn.Parameter(torch.tensor(1.3))
        self.mix = nn.Parameter(0.5 * torch.randn(2, 1, d))
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(D, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x) + self.pos) * self.temp
        h = h * self.mix[0] + torch.tanh(h) * self.mix[1]
        q, k, v = self.qkv(h).view(*h.shape[:-1], H, 3 * D).chunk(3, dim=-1)
        return self.out(torch.tanh(q * k + v).mean(-2))


KINDS = {"pos": "generic", "temp": "generic", "mix": "generic",
         "qkv.weight": Kind("linear", blocks=3, groups=H)}


def _rules(model: Odd, family: str) -> dict[str, S.Rule]:
    return S.hand_rules(model, family, {
        "pos": S.generic((1, 3, H * D)), "temp": S.generic(()), "mix": S.generic((2, 1, H * D)),
        "qkv.weight": S.per_head((3 * H * D, H * D), 3, H)})


def _build(seed: int = 0) -> Odd:
    torch.manual_seed(seed)
    return Odd().double()


def _loss(model: nn.Module, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)
    return ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_one_step_equals_the_generic_and_per_head_rules(preset, path):
    model = _build()
    _loss(model).backward()
    params = dict(model.named_parameters())
    expected = S.spec_step(params, _rules(model, FAMILY[preset]), FAMILY[preset])
    assert expected.L == 1 + 1 + 3  # inp, out, qkv: 3 blocks (heads split cells, not mass)
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = make_agd(model, preset=preset, path=path, kinds=KINDS)
    opt.step()
    assert opt.L == expected.L
    assert math.isclose(float(opt.eta), expected.eta, rel_tol=1e-10)
    S.assert_step_equals(params, expected)
    for name in ("pos", "temp", "mix"):  # exactly (η/L)·√numel along −∇/‖∇‖
        delta = (params[name] - before[name]).detach()
        g = params[name].grad
        assert math.isclose(float(delta.norm()), expected.eta / expected.L
                            * math.sqrt(g.numel()), rel_tol=1e-10)
        assert math.isclose(float((delta * g).sum() / (delta.norm() * g.norm())), -1.0,
                            rel_tol=1e-12)


def test_generic_adds_no_mass():
    model = _build()
    assert hyperfree.AGD(model, kinds=KINDS).L == hyperfree.AGD(
        model, kinds={**KINDS, "pos": "bias", "temp": "generic", "mix": "bias"}).L == 5
    with pytest.raises(ValueError, match="L = 0"):
        hyperfree.AGD([model.pos], kinds={model.pos: "generic"})


@pytest.mark.parametrize("preset", list(PRESETS))
def test_fast_path_equals_reference_twin_with_generic_and_per_head_kinds(preset):
    model = _build()
    twin = copy.deepcopy(model)
    opt = make_agd(model, preset=preset, path="fast", kinds=KINDS)
    ref = make_agd(twin, preset=preset, path="reference", kinds=KINDS)
    start = [p.detach().clone() for p in model.parameters()]
    for t in range(6):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            _loss(m, seed=t).backward()
            o.step()
        assert math.isclose(float(opt.eta), float(ref.eta), rel_tol=1e-9, abs_tol=1e-15), t
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
    moved = [n for (n, p), p0 in zip(model.named_parameters(), start) if not torch.equal(p, p0)]
    assert len(moved) == len(start)


def test_init_weights_keeps_generic_tensors_and_follows_the_per_head_rule():
    model = _build()
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    hyperfree.AGD(model, kinds=KINDS).init_weights(torch.Generator().manual_seed(0))
    for name in ("pos", "temp", "mix"):
        assert torch.equal(getattr(model, name), own[name]), name
    rule = S.per_head((3 * H * D, H * D), 3, H)
    for index, _ in rule.cells:  # every head's Q, K and V block: singular values all σ
        sv = torch.linalg.svdvals(model.qkv.weight.detach()[index])
        torch.testing.assert_close(sv, torch.full_like(sv, rule.sigma), rtol=1e-10, atol=0)
    assert not torch.equal(model.inp.weight, own["inp.weight"])  # the table's kinds did init
