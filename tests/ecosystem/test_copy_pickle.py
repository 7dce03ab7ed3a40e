"""``copy.deepcopy`` and ``pickle`` of ``hyperfree.AGD`` give working optimisers.

As torch users do, the model and its optimiser are copied together (one ``deepcopy`` of the pair,
one pickle of the pair), so the copy's param groups point at the copied model's parameters.
For every preset (``paper`` and the momentum presets included):

* the copy's ``step()`` and ``state_dict()`` work, and its trajectory equals the original's,
  bit for bit, over further steps (momentum buffers and step counters were copied);
* the copy is independent: stepping it does not move the original;
* the copy's ``state_dict`` resumes a fresh AGD on the same trajectory;
* an optimiser deep-copied alone (without its model) also steps and saves.

Run: .venv/bin/python -m pytest -q tests/ecosystem/test_copy_pickle.py
"""
from __future__ import annotations

import copy
import pickle
from typing import Any, Callable

import pytest
import torch

import hyperfree
from hyperfree.optim import PRESETS

from _ecosystem_helpers import agd, backward, flat, tiny_net

COPIES: dict[str, Callable[[Any], Any]] = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


def _train(model: torch.nn.Module, opt: hyperfree.AGD, steps: range) -> None:
    for i in steps:
        backward(model, opt, i)
        opt.step()


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_copy_continues_the_same_trajectory(preset: str, how: str) -> None:
    model = tiny_net()
    opt = agd(model, preset)
    _train(model, opt, range(3))
    model2, opt2 = COPIES[how]((model, opt))
    assert opt2.param_groups[0]["params"][0] is next(model2.parameters())
    frozen = flat(model)
    _train(model2, opt2, range(3, 6))  # the copy first: the original must not move
    assert torch.equal(flat(model), frozen)
    _train(model, opt, range(3, 6))
    assert torch.equal(flat(model2), flat(model))
    assert torch.equal(opt2.eta, opt.eta)
    assert opt2.steps == opt.steps == 6
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd2["agd"] == sd["agd"]
    if PRESETS[preset].momentum:
        for i in sd["state"]:
            assert torch.equal(sd2["state"][i]["momentum_buffer"],
                               sd["state"][i]["momentum_buffer"])


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
def test_copied_state_dict_resumes_a_fresh_optimizer(preset: str, how: str) -> None:
    model = tiny_net()
    opt = agd(model, preset)
    _train(model, opt, range(3))
    model2, opt2 = COPIES[how]((model, opt))
    fresh = tiny_net(seed=5)
    fresh.load_state_dict(model2.state_dict())
    opt3 = hyperfree.AGD(fresh, preset=preset)
    opt3.load_state_dict(opt2.state_dict())
    _train(fresh, opt3, range(3, 6))
    _train(model, opt, range(3, 6))
    assert torch.equal(flat(fresh), flat(model))


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
def test_optimizer_copied_alone_steps_and_saves(preset: str) -> None:
    model = tiny_net()
    opt = agd(model, preset)
    _train(model, opt, range(2))
    alone = copy.deepcopy(opt)
    params = [p for g in alone.param_groups for p in g["params"]]
    assert all(p is not q for p, q in zip(params, model.parameters()))
    before = torch.cat([p.detach().reshape(-1) for p in params])
    for p in params:
        p.grad = torch.ones_like(p)
    alone.step()
    after = torch.cat([p.detach().reshape(-1) for p in params])
    assert not torch.equal(before, after)
    assert alone.state_dict()["agd"]["steps"] == 3
    assert float(alone.eta) > 0
