"""Embedding rows that move only when their batch uses them (``Preset.lazy_rows``, preset
``spectral-lazy``; docs/agd-stability.md §27):

    used_r = (g_r ≠ 0)        per row r of a row-wise (spectral) embedding, this step's gradient
    u_r ← u_r · used_r        in the step's terms and move only; the momentum keeps m_r

Checked: a row the batch does not read stays where it is while its momentum decays (and moves
under the preset without ``lazy_rows``), the rows it reads move as before; G counts only the
used rows; a model without an embedding steps bit for bit as without ``lazy_rows``; the fast
path equals the reference twin in float64 (the self-estimate and the lagged fresh estimate);
resuming from a ``state_dict`` equals never stopping.
Run: ``pytest tests/optim/test_agd_lazy_rows.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS, Fresh, Momentum

from .reference import make_agd

LAZY = "spectral-lazy"
EAGER = dataclasses.replace(PRESETS[LAZY], name="eager-rows", lazy_rows=False)
FRESH = dataclasses.replace(PRESETS[LAZY], name="fresh-lazy", source=Momentum(0.9),
                            estimate=Fresh(0.9))


class Tokens(nn.Module):
    """Embedding(V, 6) -> tanh -> Linear(6, V): a char model's ends."""

    V = 10

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.out = nn.Embedding(self.V, 6), nn.Linear(6, self.V)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(ids)))


def _net(dtype=torch.float32) -> Tokens:
    torch.manual_seed(0)
    return Tokens().to(dtype)


def _ids(step: int) -> torch.Tensor:
    """Every token 0-5 early; from step 3 on only tokens 0-2 (rows 3-9 go unused)."""
    gen = torch.Generator().manual_seed(step)
    tokens = torch.arange(20) % (6 if step < 3 else 3)
    return tokens[torch.randperm(20, generator=gen)].view(4, 5)


def _train(model, opt, steps, first=0):
    for t in range(first, first + steps):
        opt.zero_grad()
        ids = _ids(t)
        nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.roll(1, 1).flatten()
                                    ).backward()
        opt.step()


def test_a_row_the_batch_does_not_read_keeps_its_place_and_its_momentum():
    lazy, eager = _net(), _net()
    a, b = hyperfree.AGD(lazy, preset=LAZY), hyperfree.AGD(eager, preset=EAGER)
    _train(lazy, a, 3)
    _train(eager, b, 3)
    assert torch.equal(lazy.embed.weight, eager.embed.weight)  # every used row alike so far
    before, m = lazy.embed.weight.detach().clone(), a.state[lazy.embed.weight][
        "momentum_buffer"].clone()
    assert m[3:6].abs().sum() > 0  # rows 3-5 carry momentum from steps 0-2
    _train(lazy, a, 2, first=3)
    _train(eager, b, 2, first=3)
    w = lazy.embed.weight.detach()
    assert torch.equal(w[3:], before[3:])  # unused since step 3: not moved
    assert not torch.equal(eager.embed.weight[3:6], before[3:6])  # the stale momentum moves them
    assert not torch.equal(w[:3], before[:3])  # the rows read move
    m_now = a.state[lazy.embed.weight]["momentum_buffer"]
    torch.testing.assert_close(m_now[3:6], m[3:6] * 0.8 ** 2)  # the momentum decays as ever


def test_a_model_without_an_embedding_steps_as_without_lazy_rows():
    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    a, b = mlp(), mlp()
    oa, ob = hyperfree.AGD(a, preset=LAZY), hyperfree.AGD(b, preset=EAGER)
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    for model, opt in ((a, oa), (b, ob)):
        for _ in range(4):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("preset", [PRESETS[LAZY], FRESH], ids=["self", "fresh"])
def test_fast_path_equals_the_reference_twin_in_float64(preset):
    model = _net(torch.float64)
    twin = copy.deepcopy(model)
    fast = make_agd(model, preset=preset, path="fast")
    ref = make_agd(twin, preset=preset, path="reference")
    fast.init_weights(torch.Generator().manual_seed(1))
    ref.init_weights(torch.Generator().manual_seed(1))
    start = model.embed.weight.detach().clone()
    for t in range(6):
        for m, o in ((model, fast), (twin, ref)):
            _train(m, o, 1, first=t)
        assert math.isclose(float(fast.eta), float(ref.eta), rel_tol=1e-9, abs_tol=1e-12), t
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
    assert torch.equal(model.embed.weight[6:], start[6:])  # never read: never moved
    assert not torch.equal(model.embed.weight[:3], start[:3])


def test_lazy_rows_without_row_cells_are_refused_by_name():
    with pytest.raises(ValueError, match="lazy_rows needs the Spectral family"):
        dataclasses.replace(PRESETS["paper"], name="paper-lazy", lazy_rows=True)


def test_resuming_from_a_state_dict_equals_never_stopping():
    straight, resumed = _net(), _net()
    a = hyperfree.AGD(straight, preset=LAZY)
    _train(straight, a, 6)
    b = hyperfree.AGD(resumed, preset=LAZY)
    _train(resumed, b, 3)
    saved_model, saved_opt = copy.deepcopy(resumed.state_dict()), copy.deepcopy(b.state_dict())
    again = _net()
    again.load_state_dict(saved_model)
    c = hyperfree.AGD(again, preset=LAZY)
    c.load_state_dict(saved_opt)
    _train(again, c, 3, first=3)
    for p, q in zip(straight.parameters(), again.parameters()):
        assert torch.equal(p, q)
