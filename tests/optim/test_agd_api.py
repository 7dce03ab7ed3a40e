"""AGD as a torch.optim.Optimizer: bad input, skipping non-finite steps, state_dict resume,
param groups, the return value of step() and the registry entry."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.train.optimizers import OptimArgs, build_optimizer

from .conftest import FCN, make


def _grads(model, x, seed=0):
    model.zero_grad()
    torch.manual_seed(seed)
    model(x).square().mean().backward()


def test_unknown_parameter_names_param_owner_and_how_to_declare():
    """Strictly (``infer=False``: the rules table and ``kinds=`` only), since AGD(model) reads
    unknown kinds from the forward (tests/optim/test_agd_infer.py)."""
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.alpha

    model = nn.Sequential(nn.Linear(4, 3), Scale())
    with pytest.raises(ValueError, match=r"'1\.alpha'.*\(3,\).*of Scale.*register_kinds\(Scale"
                                         r".*kinds=\{'1\.alpha'"):
        hyperfree.AGD(model, infer=False)
    with pytest.raises(ValueError, match=r"does not know what parameter '#0' \(shape \(2, 2\)\)"):
        hyperfree.AGD([torch.zeros(2, 2, requires_grad=True), torch.zeros(2, 3, 4, requires_grad=True)])


def test_empty_model_and_bad_gain():
    with pytest.raises(ValueError, match="no trainable parameters"):
        hyperfree.AGD(nn.ReLU())
    frozen = nn.Linear(2, 2, bias=False).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        hyperfree.AGD(frozen)
    for gain in (0.0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="gain"):
            hyperfree.AGD(FCN(), gain=gain)


def test_step_returns_closure_loss_and_keeps_eta_in_every_group():
    model, x = make("fcn")
    opt = hyperfree.AGD(model, preset="spectral-momentum")  # (spectral-fresh: η = 0 at step 1)
    opt.add_param_group({"params": [], "kinds": []})

    def closure():
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.grad_fn is not None
    eta = opt.param_groups[0]["eta"]
    assert isinstance(eta, torch.Tensor) and eta.dim() == 0 and eta.device == x.device
    assert 0 < float(eta) < 10 and opt.eta is eta and opt.param_groups[1]["eta"] is eta
    _grads(model, x)
    assert opt.step() is None


def test_no_grad_param_not_updated_but_counts():
    model = FCN()
    opt = hyperfree.AGD(model)
    _grads(model, torch.randn(4, 12))
    model.layers[1].weight.grad = None
    before = model.layers[1].weight.detach().clone()
    opt.step()
    assert torch.equal(model.layers[1].weight, before)
    assert opt.L == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_skips_whole_step(bad):
    model, x = make("resnet")
    opt = hyperfree.AGD(model)
    _grads(model, x)
    names = [n for n, _ in model.named_parameters()]
    dict(model.named_parameters())[names[3]].grad.view(-1)[5] = bad
    dict(model.named_parameters())[names[5]].grad.view(-1)[0] = bad
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert float(opt.eta) == 0.0
    msgs = [str(w.message) for w in caught if "AGD skipped" in str(w.message)]
    assert len(msgs) == 1 and repr(names[3]) in msgs[0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert opt.skipped_steps == 1
    _grads(model, x)  # a clean step afterwards works and is counted as such
    opt.step()
    assert float(opt.eta) > 0 and opt.skipped_steps == 1


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(0)
    model, x = make("vgg")
    opt = hyperfree.AGD(model, gain=2.0)
    opt.init_weights()
    for t in range(3):
        _grads(model, x, t)
        opt.step()
    ckpt = copy.deepcopy((model.state_dict(), opt.state_dict()))
    for t in range(3, 6):
        _grads(model, x, t)
        opt.step()
    straight = copy.deepcopy(model.state_dict())

    model2, _ = make("vgg")
    opt2 = hyperfree.AGD(model2)  # default gain: must be restored from the state dict
    model2.load_state_dict(ckpt[0])
    opt2.load_state_dict(ckpt[1])
    assert opt2.param_groups[0]["gain"] == 2.0 and opt2.state_dict()["agd"]["steps"] == 3
    for t in range(3, 6):
        _grads(model2, x, t)
        opt2.step()
    for k, v in model2.state_dict().items():
        assert torch.equal(v, straight[k]), k


def test_add_param_group_counts_in_L_and_validates():
    a = nn.Linear(4, 4, bias=False)
    b = nn.Linear(4, 2, bias=False)
    opt = hyperfree.AGD(a)
    opt.add_param_group({"params": b.parameters(), "kinds": ["linear"], "gain": 0.5})
    assert opt.L == 2 and opt.param_groups[1]["gain"] == 0.5
    with pytest.raises(ValueError, match=r"not part of the model.*'kinds'"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
    with pytest.raises(ValueError, match=r"must be 2-D"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "kinds": ["linear"]})
    with pytest.raises(ValueError, match="gain"):
        opt.add_param_group({"params": [torch.zeros(2, 2, requires_grad=True)],
                             "kinds": ["linear"], "gain": -1})


def test_registry_entry_builds_agd_and_refuses_lr():
    model = FCN()
    stepper = build_optimizer("agd", model, OptimArgs(gain=2.0))
    stepper.init_weights()
    out = stepper.step(model(torch.randn(3, 12)).square().mean())
    assert set(out) == {"eta"} and out["eta"].dim() == 0
    with pytest.raises(ValueError, match="--lr"):
        build_optimizer("agd", model, OptimArgs(lr=0.1))
    with pytest.raises(ValueError, match="unknown optimiser"):
        build_optimizer("nope", model)


def test_meta_device_model_is_one_line_naming_the_parameter():
    """A model built on the meta device holds no values: refused with a ValueError that names
    the parameter and what to do, not torch's NotImplementedError from a copy."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'0.weight' is on the meta device.*to_empty"):
        hyperfree.AGD(model)
    model.to_empty(device="cpu")
    assert hyperfree.AGD(model).L == 2
