"""Registry-wide properties of every tower optimiser.

Every class in ``hyper.OPTIMIZERS`` is run as the weight level and as a hyperoptimiser: the loss
goes down, its hyperparameters are reported under the documented keys, its step size is really
tuned, and ``repr`` round-trips through ``parse``. The harness's side (stacks built by name) is
tested in ``tests/train/test_train_towers.py``.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_registry.py``
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper

KEYS = {"sgd": {"lr"}, "sgdperparam": {"lr"}, "adagrad": {"lr"}, "rmsprop": {"lr", "alpha"},
        "rmsproplr": {"lr", "alpha"}, "adam": {"lr", "beta1", "beta2"},
        "adamlr": {"lr", "beta1", "beta2"}}
LR = {"sgd": 0.5, "sgdperparam": 0.5, "adagrad": 0.1, "rmsprop": 0.01, "rmsproplr": 0.01,
      "adam": 0.01, "adamlr": 0.01}


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    return model, torch.randn(64, 6), torch.randint(0, 3, (64,))


def test_keys_table_covers_registry() -> None:
    assert set(KEYS) == set(hyper.OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(hyper.OPTIMIZERS))
@pytest.mark.parametrize("role", ["weights", "hyper"])
def test_every_optimizer_trains_and_tunes(name: str, role: str) -> None:
    if role == "weights":
        text = f"{name}({LR[name]})/sgd(1e-4)"
    else:
        text = f"sgd(0.5, 0.5)/{name}({1e-3 if 'rms' in name else 1e-4})"
    model, x, y = _problem()
    net = hyper.HyperModule(model, hyper.parse(text))
    first = float(F.cross_entropy(net(x), y).detach())
    for _ in range(30):
        net.step(F.cross_entropy(net(x), y))
    with torch.no_grad():
        last = float(F.cross_entropy(net(x), y))
    assert last < 0.8 * first
    values = net.hyperparameters()
    assert len(values) == 2
    assert set(values[0]) == (KEYS[name] if role == "weights" else {"lr", "momentum"})
    assert set(values[1]) == (KEYS["sgd"] if role == "weights" else KEYS[name])
    start = LR[name] if role == "weights" else 0.5
    assert values[0]["lr"] != start  # the step size really moved
    assert repr(hyper.parse(repr(net.optimizer))) == repr(net.optimizer)
