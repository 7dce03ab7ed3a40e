"""The optimiser registry: every entry builds a working stepper, names are validated, and an
entry whose package is missing says exactly what to pip install."""
from __future__ import annotations

import pytest
import torch

from hyperfree.optim import registry
from hyperfree.optim.registry import OptimArgs, build_optimizer, list_optimizers

from .conftest import FCN


def test_missing_package_error_names_pip_package():
    @registry.register_optimizer("zz-test-missing", description="test", requires="no-such-pkg-xyz",
                                 module="no_such_module_xyz")
    def _build(model, args):  # pragma: no cover - never reached
        raise AssertionError("builder must not run when its package is missing")
    try:
        with pytest.raises(ValueError, match=r"pip install .*no-such-pkg-xyz"):
            build_optimizer("zz-test-missing", FCN())
    finally:
        registry._REGISTRY.pop("zz-test-missing")


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="lowercase"):
        registry.register_optimizer("Bad", description="x")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_optimizer("agd", description="x")(lambda m, a: None)


@pytest.mark.parametrize("name", ["agd", "sgd", "adam"])
def test_builtin_entries_lower_the_loss(name):
    torch.manual_seed(0)
    model = FCN()
    stepper = build_optimizer(name, model, OptimArgs())
    stepper.init_weights()
    x, y = torch.randn(32, 12), torch.randn(32, 5)
    losses = []
    for _ in range(80):
        loss = ((stepper.module(x) - y) ** 2).mean()
        losses.append(float(loss.detach()))
        stepper.step(loss)
    assert losses[-1] < 0.9 * losses[0], (name, losses[0], losses[-1])
    assert name in list_optimizers()
