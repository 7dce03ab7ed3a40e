"""AGD's state round-trips: state_dict resume, deepcopy and pickle, for every preset.

On :class:`tests.optim.conftest.Zoo` (every kind; the HF-style Conv1D is left out because its
class claims to live in ``transformers`` and so cannot be pickled), for EVERY preset in
``hyperfree.optim.PRESETS`` and both code paths:

* k steps, ``state_dict`` (model and optimiser) loaded into a fresh model and a fresh ``AGD``,
  k more steps == 2k straight steps, bitwise (CPU), η included; momentum buffers and counters
  travel; a state saved under another preset is refused;
* ``copy.deepcopy`` / ``pickle`` of ``(model, optimiser)`` after k steps, then k more steps on
  both, gives bitwise the same weights; a deepcopy of the optimiser alone (its own copies of
  the parameters) fed the same gradients takes the same steps.
Run: ``pytest tests/optim/test_agd_state.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch

import hyperfree
from hyperfree.optim import DEFAULT_PRESET, PRESETS
from hyperfree.optim.pieces import Momentum

from .reference import make_agd

from .conftest import Zoo, zoo_loss

K = 2
PATHS = pytest.mark.parametrize("path", ["fast", "reference"])


def _model() -> Zoo:
    torch.manual_seed(0)
    return Zoo(attn_bias=True, hf=False).double()


def _run(model, opt, steps, start):
    etas = []
    for t in range(start, start + steps):
        opt.zero_grad()
        zoo_loss(model, seed=t).backward()
        opt.step()
        etas.append(float(opt.eta))
    return etas


def _assert_equal(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    for (name, x), y in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(x, y), name


@PATHS
@pytest.mark.parametrize("preset", list(PRESETS))
def test_state_dict_resume_equals_straight_run(preset, path):
    model = _model()
    opt = make_agd(model, preset=preset, path=path)
    opt.init_weights(torch.Generator().manual_seed(1))
    _run(model, opt, K, 0)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    straight = _run(model, opt, K, K)

    fresh = _model()
    opt2 = make_agd(fresh, preset=preset, path=path)
    fresh.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    assert opt2.steps == K
    if PRESETS[preset].momentum:
        assert len(opt2.state) == len(list(fresh.parameters()))
    resumed = _run(fresh, opt2, K, K)
    assert resumed == straight
    _assert_equal(model, fresh)
    assert opt2.state_dict()["agd"] == opt.state_dict()["agd"]


def test_load_state_dict_keeps_the_kinds_report():
    model = _model()
    opt = hyperfree.AGD(model)
    _run(model, opt, 1, 0)
    opt2 = hyperfree.AGD(_model())
    opt2.load_state_dict(opt.state_dict())
    kinds = {i.name: i.kind for i in opt._infos.values()}
    assert {i.name: i.kind for i in opt2._infos.values()} == kinds and len(kinds) > 10
    assert "proj.weight" in opt2.kinds_report()


def test_state_saved_under_another_preset_is_refused():
    model = _model()
    opt = hyperfree.AGD(model, preset="spectral-momentum")
    _run(model, opt, 1, 0)
    with pytest.raises(ValueError, match="spectral-momentum"):
        hyperfree.AGD(_model(), preset="paper").load_state_dict(opt.state_dict())


@PATHS
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_copied_optimiser_continues_like_the_original(preset, how, path):
    model = _model()
    opt = make_agd(model, preset=preset, path=path)
    _run(model, opt, K, 0)
    pair = (model, opt)
    model2, opt2 = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert opt2.steps == K and opt2.preset == opt.preset
    assert _run(model2, opt2, K, K) == _run(model, opt, K, K)
    _assert_equal(model, model2)


@pytest.mark.parametrize("preset", ["paper", "spectral-sphere"])
def test_deepcopy_of_the_optimiser_alone_steps_its_own_parameters(preset):
    model = _model()
    opt = hyperfree.AGD(model, preset=preset)
    _run(model, opt, K, 0)
    clone = copy.deepcopy(opt)
    mine = [p for g in clone.param_groups for p in g["params"]]
    theirs = [p for g in opt.param_groups for p in g["params"]]
    assert all(a is not b and torch.equal(a, b) for a, b in zip(mine, theirs))
    for t in range(K, 2 * K):
        opt.zero_grad()
        zoo_loss(model, seed=t).backward()
        for a, b in zip(mine, theirs):
            a.grad = b.grad.clone()
        opt.step()
        clone.step()
        assert torch.equal(clone.eta, opt.eta)
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_state_saved_under_a_redefined_preset_warns_and_resumes_under_the_current_one():
    """A library upgrade that changes a preset (the default's β 0.95 -> 0.8): the state loads,
    with one warning naming the piece that changed, and the run continues under the current
    definition, as a fresh optimiser of that definition loaded with the same state would."""
    old = dataclasses.replace(PRESETS["spectral-average"], source=Momentum(0.95))
    model = _model()
    opt = hyperfree.AGD(model, preset=old)
    _run(model, opt, K, 0)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    assert saved[1]["agd"]["definition"]["source"] == "Momentum(beta=0.95)"
    runs = []
    for expect_warning in (True, False):
        fresh = _model()
        fresh.load_state_dict(saved[0])
        opt2 = hyperfree.AGD(fresh, preset="spectral-average")
        state = copy.deepcopy(saved[1])
        if not expect_warning:  # the same state, its definition rewritten to the current one
            state["agd"]["definition"] = opt2.preset.definition
            opt2.load_state_dict(state)
        else:
            with pytest.warns(UserWarning, match=r"source Momentum\(beta=0\.95\) -> "
                                                 r"Momentum\(beta=0\.8\)"):
                opt2.load_state_dict(state)
        runs.append(_run(fresh, opt2, K, K))
    assert runs[0] == runs[1]


def test_a_field_added_to_presets_since_a_state_was_saved_is_no_redefinition(recwarn):
    """``Preset.head`` came after states were saved without it: at its default, the saved
    definition still matches; set, it is a change named like any other. A state of
    ``spectral-damped``, the default until §25, is refused by today's default with the
    remedy."""
    model = _model()
    opt = hyperfree.AGD(model, preset="spectral-damped")
    _run(model, opt, 1, 0)
    state = opt.state_dict()
    del state["agd"]["definition"]["head"]  # as saved before the field existed
    hyperfree.AGD(_model(), preset="spectral-damped").load_state_dict(copy.deepcopy(state))
    assert not [w for w in recwarn if "defined otherwise" in str(w.message)]
    headed = dataclasses.replace(PRESETS["spectral-damped"], head=True)
    with pytest.warns(UserWarning, match=r"head False -> True"):
        hyperfree.AGD(_model(), preset=headed).load_state_dict(copy.deepcopy(state))
    assert DEFAULT_PRESET == "spectral-head"
    with pytest.raises(ValueError, match=r"saved with preset 'spectral-damped', not "
                       r"'spectral-head'; build AGD\(\.\.\., preset='spectral-damped'\)"):
        hyperfree.AGD(_model()).load_state_dict(state)


def test_state_saved_before_definitions_were_recorded_loads_silently(recwarn):
    model = _model()
    opt = hyperfree.AGD(model)
    _run(model, opt, 1, 0)
    state = opt.state_dict()
    del state["agd"]["definition"]
    hyperfree.AGD(_model()).load_state_dict(state)
    assert not [w for w in recwarn if "defined otherwise" in str(w.message)]
