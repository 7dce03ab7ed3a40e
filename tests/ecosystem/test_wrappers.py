"""η is readable after any wrapper's step: ``group["eta"]`` holds the step just taken.

Wrappers such as ``torch.amp.GradScaler.step`` (which returns ``None`` or the step's result),
accelerate's ``AcceleratedOptimizer`` and Lightning's automatic optimisation call
``optimizer.step()`` for the user, so the value ``step`` returns is lost to them; η must be read
from the optimiser. Checked against a twin (same weights, same unscaled gradient) stepped
directly:

* after ``GradScaler.step(opt)`` (CPU, enabled, scale 2¹⁰): ``opt.param_groups[0]["eta"]``
  equals the twin's η — the scaler unscaled the gradients before AGD saw them — and differs
  from the previous step's η; a step the scaler skips (an Inf gradient) leaves η as it was;
* after a generic wrapper whose ``step`` returns the wrapped step's result: the result is the
  closure's loss and ``group["eta"]`` is this step's η.

Run: .venv/bin/python -m pytest -q tests/ecosystem/test_wrappers.py
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch

from _ecosystem_helpers import agd, backward, loss_of, tiny_net


class Wrapper:
    """A generic optimiser wrapper (the shape of accelerate's AcceleratedOptimizer)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return self.optimizer.step(closure)


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
def test_eta_after_grad_scaler_step_is_this_steps(preset: str) -> None:
    model = tiny_net()
    opt = agd(model, preset)
    twin_model, twin_opt = copy.deepcopy((model, opt))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    assert scaler.is_enabled()
    previous = None
    for i in range(3):
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss_of(model, i)).backward()
        scaler.step(opt)
        scaler.update()
        backward(twin_model, twin_opt, i)
        twin_opt.step()
        eta = opt.param_groups[0]["eta"]
        torch.testing.assert_close(eta, twin_opt.eta, rtol=1e-5, atol=0)
        assert previous is None or float(eta) != previous
        previous = float(eta)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss_of(model, 3) * float("inf")).backward()
    scaler.step(opt)  # found an Inf: the scaler skips AGD's step
    scaler.update()
    assert float(opt.param_groups[0]["eta"]) == previous and opt.steps == 3


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
def test_eta_after_generic_wrapper_step_and_loss_returned(preset: str) -> None:
    model = tiny_net()
    opt = agd(model, preset)
    twin_model, twin_opt = copy.deepcopy((model, opt))
    wrapped = Wrapper(opt)
    for i in range(3):
        def closure(i: int = i) -> torch.Tensor:
            wrapped.zero_grad()
            loss = loss_of(model, i)
            loss.backward()
            return loss

        result = wrapped.step(closure)
        expected_loss = backward(twin_model, twin_opt, i)
        twin_opt.step()
        assert isinstance(result, torch.Tensor) and torch.equal(result.detach(), expected_loss)
        assert torch.equal(wrapped.param_groups[0]["eta"], twin_opt.eta)
        assert all(torch.equal(g["eta"], twin_opt.eta) for g in opt.param_groups)
        assert float(twin_opt.eta) > 0
