"""A tower that cannot go on says so, once, and names what to change.

* Skipped steps: ``NonFiniteStepWarning`` is shown once per call site under Python's default
  filter however many steps are skipped; ``skipped_steps`` / ``last_step_skipped`` count them.
* ``max_consecutive_skips`` skips in a row raise ``TowerDivergedError`` (None: never).
* A hyper-update that makes a hyperparameter non-finite raises, naming the level, the
  hyperparameter and a smaller step size, and leaves every value as it was before that step.
* Weights that stopped being finite raise at the next step instead of skipping forever.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_divergence.py``
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper


def _net(text: str, dtype: torch.dtype = torch.float64, **kwargs) -> hyper.HyperModule:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)
    return hyper.HyperModule(model, hyper.parse(text), **kwargs)


def _batch(dtype: torch.dtype = torch.float64, nan: bool = False):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=gen, dtype=dtype), torch.randn(32, 3, generator=gen)
    if nan:
        x[0, 0] = float("nan")
    return x, y.to(dtype)


def _values(net: hyper.HyperModule) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.model.parameters()] + [
        lv.raw.detach().clone() for lv in net._levels]


def test_skip_warning_is_shown_once_and_skips_are_counted() -> None:
    net = _net("adam(1e-2)/sgd(1e-5)")
    x, y = _batch()
    bad, _ = _batch(nan=True)
    net.step(F.mse_loss(net(x), y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(7):
            net.step(F.mse_loss(net(bad), y))
    assert [w.category for w in caught] == [hyper.NonFiniteStepWarning]
    assert "skipped_steps" in str(caught[0].message)
    assert net.skipped_steps == 7 and net.last_step_skipped
    net.step(F.mse_loss(net(x), y))
    assert net.skipped_steps == 7 and not net.last_step_skipped


def test_consecutive_skips_raise_naming_the_hyperparameters() -> None:
    net = _net("sgd(0.05)/sgd(1e-3)", max_consecutive_skips=3)
    x, y = _batch()
    bad, _ = _batch(nan=True)
    net.step(F.mse_loss(net(x), y))
    with pytest.warns(hyper.NonFiniteStepWarning):
        for _ in range(2):
            net.step(F.mse_loss(net(bad), y))
        net.step(F.mse_loss(net(x), y))  # a good step resets the run of skips
        for _ in range(2):
            net.step(F.mse_loss(net(bad), y))
        with pytest.raises(hyper.TowerDivergedError,
                           match=r"3 steps in a row .*lr=0\.05.*lr@1=0\.001.*sgd\(lr=0\.0001\)"):
            net.step(F.mse_loss(net(bad), y))
    patient = _net("sgd(0.05)/sgd(1e-3)", max_consecutive_skips=None)
    with pytest.warns(hyper.NonFiniteStepWarning):
        for _ in range(25):
            patient.step(F.mse_loss(patient(bad), y))
    assert patient.skipped_steps == 25
    with pytest.raises(ValueError, match="max_consecutive_skips must be .*got 0"):
        _net("sgd/sgd", max_consecutive_skips=0)


@pytest.mark.parametrize("fused", [True, False])
def test_non_finite_hyperparameter_raises_and_changes_nothing(fused: bool) -> None:
    # κ = 1e308: the second hyper-update overflows α to inf (its hypergradient is finite)
    net = _net("sgd(1e-3)/sgd(1e308)", fused=fused)
    x, y = _batch()
    y = 100 * y
    net.step(F.mse_loss(net(x), y))
    before = _values(net)
    with pytest.raises(hyper.TowerDivergedError,
                       match=r"level 1 \(sgd\(lr=1e\+308\)\) made lr \(a hyperparameter of level "
                             r"0.*e\.g\. sgd\(lr=1e\+307\)"):
        net.step(F.mse_loss(net(x), y))
    for a, b in zip(_values(net), before, strict=True):
        assert torch.equal(a, b)
    assert net.hyperparameters()[0]["lr"] == 1e-3


def test_non_finite_weights_raise_instead_of_skipping_forever() -> None:
    net = _net("sgd(1e300)", dtype=torch.float32)  # fixed: the first update overflows float32
    x, y = _batch(torch.float32)
    net.step(F.mse_loss(net(x), y))
    with pytest.raises(hyper.TowerDivergedError,
                       match=r"weights are no longer finite.*fixed step size .*sgd\(lr=1e\+299\)"):
        net.step(F.mse_loss(net(x), y))
    tower = _net("sgd(1e37)/sgd(1e-30)", dtype=torch.float32)  # α·g overflows float32
    tower.step(F.mse_loss(tower(x), 100 * y))
    with pytest.raises(hyper.TowerDivergedError,
                       match=r"weights are no longer finite.*Level 1 \(sgd\(lr=1e-30\)\) tunes"
                             r".*e\.g\. sgd\(lr=1e-31\), or a smaller initial lr"):
        tower.step(F.mse_loss(tower(x), 100 * y))
