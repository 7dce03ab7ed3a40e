"""AGD's initialisation survives a framework's restore order (Lightning's, imitated faithfully).

Lightning resumes a run in this order: build the LightningModule (its ``__init__``), load the
checkpoint's model weights into it, call ``configure_optimizers()``, then load the optimiser
states, then continue training. So an initialisation placed where the optimiser is created
(``configure_optimizers``) runs *after* the weights were restored and wipes them (the issue
measured a 0.93 max weight difference). The safe place is where the model is built:

* the safe pattern (init in ``__init__``; ``configure_optimizers`` only builds AGD) resumed in
  that order equals never stopping, bit for bit, for the paper and a momentum preset;
* the old pattern (init in ``configure_optimizers``) resumed in the same order diverges from
  never stopping — the failure the issue reported, so this test would catch its return;
* the guard: ``init_weights()`` on an optimiser whose state was restored refuses;
* ``hyperfree.optim.init_weights(model)`` (the safe pattern's call) draws the same weights as
  ``AGD(model).init_weights()`` for the same generator.

Run: .venv/bin/python -m pytest -q tests/ecosystem/test_restore_order.py
"""
from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torch import nn

import hyperfree

from _ecosystem_helpers import backward, flat, tiny_net


class SafeModule(nn.Module):
    """A LightningModule stand-in: AGD's init where the model is built."""

    def __init__(self, preset: str, seed: int) -> None:
        super().__init__()
        self.preset = preset
        self.net = tiny_net(seed)
        hyperfree.optim.init_weights(self.net)  # AGD's init rule applied to the model itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> hyperfree.AGD:
        return hyperfree.AGD(self.net, preset=self.preset)  # no init here


class OldModule(SafeModule):
    """The old README pattern: init where the optimiser is created."""

    def __init__(self, preset: str, seed: int) -> None:
        nn.Module.__init__(self)
        self.preset = preset
        self.net = tiny_net(seed)

    def configure_optimizers(self) -> hyperfree.AGD:
        opt = hyperfree.AGD(self.net, preset=self.preset)
        opt.init_weights()
        return opt


def _fit(module: SafeModule, opt: hyperfree.AGD, steps: range) -> None:
    for i in steps:
        backward(module, opt, i)
        opt.step()


def _checkpoint(module: nn.Module, opt: hyperfree.AGD) -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "optimizer_states": [opt.state_dict()]}, buf)
    return buf.getvalue()


def _resume(cls: type, preset: str, ckpt: bytes, steps: range) -> SafeModule:
    """A new process: build the module, restore weights, configure_optimizers, restore the
    optimiser state, continue — Lightning's order."""
    state: dict[str, Any] = torch.load(io.BytesIO(ckpt), weights_only=True)
    module = cls(preset, seed=123)  # another process: other random draws before restore
    module.load_state_dict(state["state_dict"])
    opt = module.configure_optimizers()
    opt.load_state_dict(state["optimizer_states"][0])
    _fit(module, opt, steps)
    return module


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
def test_init_in_init_resumes_exactly_in_lightning_order(preset: str) -> None:
    module = SafeModule(preset, seed=0)
    opt = module.configure_optimizers()
    _fit(module, opt, range(4))
    ckpt = _checkpoint(module, opt)
    _fit(module, opt, range(4, 8))
    resumed = _resume(SafeModule, preset, ckpt, range(4, 8))
    assert torch.equal(flat(resumed), flat(module))


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
def test_init_in_configure_optimizers_diverges_in_lightning_order(preset: str) -> None:
    module = OldModule(preset, seed=0)
    opt = module.configure_optimizers()
    _fit(module, opt, range(4))
    ckpt = _checkpoint(module, opt)
    _fit(module, opt, range(4, 8))
    resumed = _resume(OldModule, preset, ckpt, range(4, 8))
    gap = float((flat(resumed) - flat(module)).abs().max())
    assert gap > 0.5, gap  # measured ~1.1: the restored weights were wiped


def test_init_weights_refuses_once_a_state_was_restored() -> None:
    module = SafeModule("paper", seed=0)
    opt = module.configure_optimizers()
    _fit(module, opt, range(2))
    opt2 = hyperfree.AGD(module.net, preset="paper")
    opt2.load_state_dict(opt.state_dict())
    before = flat(module)
    with pytest.raises(ValueError, match="would wipe the trained weights"):
        opt2.init_weights()
    assert torch.equal(flat(module), before)


def test_init_rule_for_the_model_equals_agds() -> None:
    from hyperfree.optim import init_weights

    a, b = tiny_net(seed=0), tiny_net(seed=0)
    init_weights(a, generator=torch.Generator().manual_seed(3))
    hyperfree.AGD(b).init_weights(generator=torch.Generator().manual_seed(3))
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(tiny_net(seed=0)))
