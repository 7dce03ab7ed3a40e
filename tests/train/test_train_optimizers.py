"""The optimiser registry: every built-in entry builds a working stepper, names are validated,
unknown names list the choices, and an entry whose package is missing says exactly what to pip
install.

Run: .venv/bin/python -m pytest -q tests/train/test_train_optimizers.py
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperfree.models import create_model
from hyperfree.train import optimizers
from hyperfree.train.optimizers import OptimArgs, build_optimizer, list_optimizers


def _fcn() -> nn.Module:
    return create_model("fcn", in_channels=1, num_classes=5, image_size=3, depth=4, width=16)


def test_missing_package_error_names_pip_package() -> None:
    @optimizers.register_optimizer("zz-test-missing", description="test",
                                   requires="no-such-pkg-xyz", module="no_such_module_xyz")
    def _build(model, args):  # pragma: no cover - never reached
        raise AssertionError("builder must not run when its package is missing")
    try:
        with pytest.raises(ValueError, match=r"pip install .*no-such-pkg-xyz"):
            build_optimizer("zz-test-missing", _fcn())
    finally:
        optimizers._REGISTRY.unregister("zz-test-missing")
    assert "zz-test-missing" not in list_optimizers()


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        optimizers.register_optimizer("Bad", description="x")
    with pytest.raises(ValueError, match="already registered"):
        optimizers.register_optimizer("agd", description="x")(lambda m, a: None)


def test_unknown_name_lists_choices_and_the_stack_form() -> None:
    with pytest.raises(ValueError, match=r"unknown optimiser 'nope'; choose one of agd, sgd, "
                                         r"adam, .*gdtuo or a hypergradient stack") as err:
        build_optimizer("nope", _fcn())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["agd", "sgd", "adam"])
def test_builtin_entries_lower_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = _fcn()
    stepper = build_optimizer(name, model, OptimArgs())
    stepper.init_weights()
    x, y = torch.randn(32, 9), torch.randn(32, 5)
    losses = []
    for _ in range(80):
        loss = ((stepper.module(x) - y) ** 2).mean()
        losses.append(float(loss.detach()))
        stepper.step(loss)
    assert losses[-1] < 0.9 * losses[0], (name, losses[0], losses[-1])
    assert name in list_optimizers()


@pytest.mark.parametrize("spec, given, resolved", [
    ("agd", OptimArgs(), OptimArgs(gain=1.0)),
    ("agd", OptimArgs(gain=10.0), OptimArgs(gain=10.0)),
    ("adam", OptimArgs(), OptimArgs(lr=1e-3, schedule="constant", warmup_steps=0,
                                    clip_grad_norm=0.0)),
    ("sgd", OptimArgs(momentum=0.9), OptimArgs(lr=0.1, momentum=0.9, schedule="constant",
                                               warmup_steps=0, clip_grad_norm=0.0)),
    ("adamw", OptimArgs(schedule="cosine", warmup_steps=5),
     OptimArgs(lr=1e-3, weight_decay=0.01, schedule="cosine", warmup_steps=5,
               clip_grad_norm=0.0)),
    ("muon", OptimArgs(lr=0.02), OptimArgs(lr=0.02, momentum=0.95, weight_decay=0.1,
                                           schedule="constant", warmup_steps=0,
                                           clip_grad_norm=0.0)),
    ("agd-spectral-momentum", OptimArgs(), OptimArgs(gain=1.0)),
    ("prodigy", OptimArgs(), OptimArgs()),
    ("sgd(0.01)/sgd(1e-4)", OptimArgs(), OptimArgs()),
])
def test_defaults_are_resolved(spec: str, given: OptimArgs, resolved: OptimArgs) -> None:
    assert optimizers.resolve_optim_args(spec, given) == resolved


@pytest.mark.parametrize("spec, args, message", [
    ("agd", OptimArgs(lr=0.1), "--lr is not used by agd: it takes --gain; drop the flag"),
    ("dog", OptimArgs(gain=2.0), "--gain is not used by dog: it takes no flags"),
    ("agd", OptimArgs(gain=1e300), "agd needs --gain in (0, 1e6] (AGD's limit), got 1e+300"),
    ("agd", OptimArgs(gain=2e6), "agd needs --gain in (0, 1e6] (AGD's limit), got 2e+06"),
    ("agd", OptimArgs(gain=0.0), "agd needs --gain in (0, 1e6] (AGD's limit), got 0"),
    ("sgd", OptimArgs(lr=float("inf")), "sgd needs --lr in (0, 3.403e38] (float32's limit), "
     "got inf"),
    ("adam", OptimArgs(lr=-1e-3), "adam needs --lr in (0, 3.403e38] (float32's limit), got "
     "-0.001"),
    ("sgd", OptimArgs(momentum=1.0), "sgd needs --momentum in [0, 1), got 1"),
    ("sgd(0.01)/sgd(1e-4)", OptimArgs(lr=0.1), "--lr cannot be combined with the stack"),
])
def test_bad_flags_are_one_line_errors_before_any_model(spec: str, args: OptimArgs,
                                                        message: str) -> None:
    with pytest.raises(ValueError) as err:
        optimizers.resolve_optim_args(spec, args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
