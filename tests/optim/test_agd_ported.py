"""Settings ported from AdamW are caught (docs/agd-rules.md §7).

* ``lr`` more than 10x from 1 warns ONCE per optimiser (one warning for several groups), saying
  it multiplies AGD's own step and that 1 is AGD as derived; lr in [0.1, 10] and tensor lrs of 1
  do not warn. Its meaning is what the warning says: every displacement is lr times the derived
  one (checked: the first step with lr=3e-4 moves every parameter 3e-4 times as far).
* ``weight_decay=0`` (constructor or group) is accepted: it is what AGD does; any other value,
  and any ``betas``, ``momentum`` or ``eps``, is refused with ONE line naming the setting and
  what AGD does instead, in the constructor, in a param group and in ``add_param_group``.
* A keyword AGD does not take is a ``TypeError``, as for any Python function.
Run: ``pytest tests/optim/test_agd_ported.py``.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import hyperfree


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _lr_warnings(model=None, groups=None, **kw):
    model = model or _model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if groups is None:
            hyperfree.AGD(model, **kw)
        else:
            hyperfree.AGD(groups, model=model, **kw)
    return [str(w.message) for w in record if "multiplies AGD's own step" in str(w.message)]


def test_a_far_lr_warns_once_and_says_what_it_means():
    found = _lr_warnings(lr=3e-4)
    assert len(found) == 1
    assert "lr=0.0003" in found[0] and "lr=1 (the default) is AGD as derived" in found[0]
    model = _model()
    groups = [{"params": list(model[0].parameters())}, {"params": list(model[2].parameters())}]
    assert len(_lr_warnings(model, groups, lr=3e-4)) == 1  # two groups, one line
    for lr in (1.0, 0.5, 0.1, 10.0, torch.tensor(1.0)):
        assert _lr_warnings(lr=lr) == [], lr
    assert len(_lr_warnings(lr=50.0)) == 1


def test_lr_multiplies_every_displacement():
    x = torch.randn(16, 4, dtype=torch.float64)
    moves = {}
    for lr in (1.0, 3e-4):
        model = _model()
        before = [p.detach().clone() for p in model.parameters()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = hyperfree.AGD(model, lr=lr, preset="spectral")
        model(x).square().mean().backward()
        opt.step()
        moves[lr] = [p.detach() - b for p, b in zip(model.parameters(), before)]
    for a, b in zip(moves[1.0], moves[3e-4]):
        torch.testing.assert_close(b, 3e-4 * a, rtol=1e-9, atol=0)


@pytest.mark.parametrize("key, value", [("weight_decay", 0.01), ("betas", (0.9, 0.999)),
                                        ("momentum", 0.9), ("eps", 1e-8)])
def test_ported_settings_are_refused_with_one_line(key, value):
    model = _model()
    with pytest.raises(ValueError) as err:
        hyperfree.AGD(model, **{key: value})
    assert "\n" not in str(err.value) and f"AGD {key}=" in str(err.value)
    assert "AGD has no" in str(err.value)
    group = {"params": list(model.parameters()), key: value}
    with pytest.raises(ValueError, match=f"AGD param group {key}=") as err:
        hyperfree.AGD([group], model=model)
    assert "\n" not in str(err.value)
    opt = hyperfree.AGD(list(model[0].parameters()), model=model)
    with pytest.raises(ValueError, match=f"AGD param group {key}="):
        opt.add_param_group({"params": list(model[2].parameters()), key: value})


def test_zero_weight_decay_is_accepted_and_changes_nothing():
    x = torch.randn(16, 4, dtype=torch.float64)
    model = _model()
    twin = copy.deepcopy(model)
    plain = hyperfree.AGD(model)
    groups = [{"params": list(twin[0].parameters()), "weight_decay": 0.0},
              {"params": list(twin[2].parameters()), "weight_decay": 0}]
    ported = hyperfree.AGD(groups, model=twin, weight_decay=0)
    for m, o in ((model, plain), (twin, ported)):
        m(x).square().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_an_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'amsgrad'"):
        hyperfree.AGD(_model(), amsgrad=True)
