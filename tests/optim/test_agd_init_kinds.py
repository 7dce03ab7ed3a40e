"""``init_weights()`` initialises every parameter kind by its documented rule.

On :class:`tests.optim.conftest.Zoo` (every kind; attention biases included), after
``AGD(model).init_weights(generator)``, with each parameter's cells and σ from the hand-written
rule table (:func:`tests.optim.agd_spec.hand_rules`): every matrix cell (Linear, each packed
Q/K/V or gate block, each conv / transposed-conv slice, the HF Conv1D transpose) has all its
singular values equal to σ (SVD) and the cells are independent draws; every embedding row has
norm √d (RMS 1) except the ``padding_idx`` row, which is zero; gains are 1; biases 0. The same
holds for an optimiser restored by ``copy.deepcopy`` or ``pickle`` before any step. Once a
step was taken (or restored from a state_dict), ``init_weights()`` raises ``ValueError``.
Run: ``pytest tests/optim/test_agd_init_kinds.py``.
"""
from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch import nn

import hyperfree

from . import agd_spec as S
from .conftest import Zoo, zoo_loss


def _check_init(model: Zoo) -> int:
    """Assert the rule of every parameter; returns the number of cells checked."""
    rules = S.hand_rules(model, "spectral")  # spectral: embedding cells are its rows
    params = dict(model.named_parameters())
    checked = 0
    for name, rule in rules.items():
        p = params[name].detach()
        cells = [S._cell(p, index, tr) for index, tr in rule.cells]
        if rule.how == "matrix":
            for c in cells:
                sv = torch.linalg.svdvals(c)
                assert sv.numel() == min(c.shape)
                torch.testing.assert_close(sv, torch.full_like(sv, rule.sigma), rtol=1e-10,
                                           atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
            if len(cells) > 1:
                assert not torch.allclose(cells[0], cells[1]), f"{name}: cells are not independent"
        elif rule.how == "gain":
            assert torch.equal(p, torch.ones_like(p)), name
        elif rule.mass == 0:  # bias
            assert torch.equal(p, torch.zeros_like(p)), name
        else:  # embedding rows
            norms = torch.linalg.vector_norm(p, dim=1)
            pad = {"embed.weight": 0}.get(name)
            for t, n in enumerate(norms):
                expected = 0.0 if t == pad else rule.sigma
                assert math.isclose(float(n), expected, rel_tol=1e-12, abs_tol=0), (name, t)
            rms = p.pow(2).mean(dim=1).sqrt()
            assert float(rms[1:].min()) > 0.999 and float(rms[1:].max()) < 1.001
        checked += len(cells)
    return checked


def _fresh(seed: int = 0) -> Zoo:
    torch.manual_seed(seed)
    model = Zoo(attn_bias=True, hf=False).double()
    with torch.no_grad():  # away from any rule, so init_weights must do the work
        for p in model.parameters():
            p.normal_()
    return model


def test_init_weights_follows_every_kinds_rule():
    model = _fresh()
    opt = hyperfree.AGD(model)
    assert opt.L == sum(r.mass for r in S.hand_rules(model, "spectral").values())
    opt.init_weights(torch.Generator().manual_seed(1))
    assert _check_init(model) > 60


def test_init_weights_of_hf_conv1d_is_the_transpose_rule():
    torch.manual_seed(0)
    model = Zoo(hf=True).double()
    hyperfree.AGD(model).init_weights()
    sv = torch.linalg.svdvals(model.proj.weight.detach())  # stored (d_in=8, d_out=10)
    torch.testing.assert_close(sv, torch.full_like(sv, math.sqrt(10 / 8)), rtol=1e-10, atol=0)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_init_weights_after_copying_an_unstepped_optimiser(how):
    model = _fresh()
    opt = hyperfree.AGD(model)
    pair = (model, opt)
    model2, opt2 = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    opt2.init_weights(torch.Generator().manual_seed(1))
    _check_init(model2)


def test_init_weights_is_seeded():
    a, b = _fresh(0), _fresh(1)
    hyperfree.AGD(a).init_weights(torch.Generator().manual_seed(5))
    hyperfree.AGD(b).init_weights(torch.Generator().manual_seed(5))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_init_weights_after_a_step_raises():
    model = _fresh()
    opt = hyperfree.AGD(model)
    opt.init_weights()
    zoo_loss(model).backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"after 1 steps"):
        opt.init_weights()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # untouched
    resumed = hyperfree.AGD(_fresh())
    resumed.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="init_weights"):
        resumed.init_weights()


def test_init_weights_function_equals_the_optimiser_method():
    """``hyperfree.optim.init_weights(model)`` (for frameworks that restore weights after
    building the optimiser) initialises exactly as ``AGD(model).init_weights()``."""
    from hyperfree.optim import init_weights

    def build():
        torch.manual_seed(3)
        return nn.Sequential(nn.Embedding(7, 4, padding_idx=2), nn.LayerNorm(4),
                             nn.Linear(4, 5), nn.Conv1d(5, 3, 3))

    a, b = build(), build()
    hyperfree.AGD(a).init_weights(torch.Generator().manual_seed(11))
    assert init_weights(b, generator=torch.Generator().manual_seed(11)) is b
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert torch.equal(b[0].weight[2], torch.zeros(4))
    assert not torch.equal(a[2].weight, build()[2].weight)  # it did re-initialise
