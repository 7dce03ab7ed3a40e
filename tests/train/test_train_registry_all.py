"""Every registered optimiser, property-tested, and the new entries checked against torch.

* every entry of the registry (AGD once per preset, the baselines, AdamW, Muon, the peers, and
  a tower) takes a few steps on a tiny model with every common parameter kind: the loss stays
  finite, the weights move, the logged scalars are 0-dim tensors (``eta`` for AGD);
* ``agd`` is :data:`hyperfree.optim.DEFAULT_PRESET` and ``agd-<p>`` exists for every preset
  ``p`` and runs that preset;
* ``muon`` splits parameters by AGD kind (2-D single-block ``linear`` → Muon; embeddings, gains,
  biases, conv kernels, packed Q/K/V → AdamW) and its trajectory equals a hand-built
  ``torch.optim.Muon`` + ``torch.optim.AdamW`` pair bit for bit;
* ``adamw --weight-decay`` equals ``torch.optim.AdamW(lr, weight_decay)`` bit for bit.

Run: .venv/bin/python -m pytest -q tests/train/test_train_registry_all.py
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from hyperfree.optim import DEFAULT_PRESET, PRESETS
from hyperfree.train.optimizers import (OptimArgs, build_optimizer, get_optimizer_info,
                                        list_optimizers)
from hyperfree.train.schedules import Schedule, ScheduledStepper


class KindsNet(nn.Module):
    """Embedding, Conv1d, packed attention, LayerNorm, Linear with and without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)                                  # (B, T, 8)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = torch.relu(self.hidden(self.norm(h)))
        return self.head(h.mean(dim=1))                         # (B, 3)


def _data() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 10, (16, 5), generator=gen), torch.randint(0, 3, (16,), generator=gen)


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


ENTRIES = [*list_optimizers(), "sgd(0.01)/sgd(1e-4)"]


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_takes_finite_steps(name: str) -> None:
    info = get_optimizer_info(name) if name in list_optimizers() else None
    if info is not None and info.requires is not None:
        pytest.importorskip(info.module or info.requires.replace("-", "_"))  # the peers extra
    torch.manual_seed(0)
    model = KindsNet()
    stepper = build_optimizer(name, model, OptimArgs())
    if name in list_optimizers() and get_optimizer_info(name).defaults.schedule is not None:
        stepper = ScheduledStepper(stepper, Schedule("cosine", 1, 4))  # lr optimisers
    stepper.init_weights()
    x, y = _data()
    before = _flat(model)
    for _ in range(4):
        stepper.train()
        loss = _loss(stepper.module, x, y)
        assert torch.isfinite(loss), (name, float(loss))
        logs = stepper.step(loss)
        assert all(isinstance(v, Tensor) and v.dim() == 0 and torch.isfinite(v)
                   for v in logs.values()), (name, logs)
    stepper.eval()
    assert torch.isfinite(_loss(stepper.module, x, y))
    stepper.train()
    assert not torch.equal(_flat(model), before), name
    if name.startswith("agd"):
        assert float(logs["eta"]) > 0
    stepper.load_state_dict(copy.deepcopy(stepper.state_dict()))


def test_one_agd_entry_per_preset() -> None:
    names = list_optimizers()
    assert {f"agd-{p}" for p in PRESETS} | {"agd-auto"} <= set(names)
    for spec, preset in [(f"agd-{p}", p) for p in PRESETS]:
        stepper = build_optimizer(spec, nn.Linear(4, 3, bias=False))
        assert stepper.optimizer.preset == PRESETS[preset], spec
    # "agd" is the default preset, for every network; "agd-auto" (the earlier name) the same
    assert DEFAULT_PRESET == "spectral-head"
    for spec in ("agd", "agd-auto"):
        plain = build_optimizer(spec, nn.Linear(4, 3, bias=False)).optimizer.preset
        normed = build_optimizer(spec, nn.Sequential(nn.Linear(4, 3, bias=False),
                                                     nn.LayerNorm(3))).optimizer.preset
        assert plain is normed is PRESETS[DEFAULT_PRESET], spec


def test_muon_splits_by_kind_and_equals_torch() -> None:
    torch.manual_seed(0)
    model = KindsNet()
    twin = copy.deepcopy(model)
    stepper = build_optimizer("muon", model, OptimArgs(lr=0.02))
    assert stepper.names == {
        "muon": ["attn.out_proj.weight", "hidden.weight", "head.weight"],
        "adamw": ["embed.weight", "conv.weight", "conv.bias", "attn.in_proj_weight",
                  "attn.in_proj_bias", "attn.out_proj.bias", "norm.weight", "norm.bias",
                  "hidden.bias"]}
    params = dict(twin.named_parameters())
    muon = torch.optim.Muon([params[n] for n in stepper.names["muon"]], lr=0.02)
    adamw = torch.optim.AdamW([params[n] for n in stepper.names["adamw"]], lr=0.02)
    x, y = _data()
    for _ in range(3):
        stepper.step(_loss(model, x, y))
        for opt in (muon, adamw):
            opt.zero_grad()
        _loss(twin, x, y).backward()
        muon.step()
        adamw.step()
    assert torch.equal(_flat(model), _flat(twin))
    described = stepper.describe()
    assert (described["muon"]["lr"], described["muon"]["momentum"],
            described["muon"]["weight_decay"], described["adamw"]["weight_decay"]) == \
        (0.02, 0.95, 0.1, 0.01)


def test_adamw_weight_decay_equals_torch() -> None:
    torch.manual_seed(0)
    model = KindsNet()
    twin = copy.deepcopy(model)
    stepper = build_optimizer("adamw", model, OptimArgs(lr=0.01, weight_decay=0.3))
    ref = torch.optim.AdamW(twin.parameters(), lr=0.01, weight_decay=0.3)
    x, y = _data()
    for _ in range(3):
        stepper.step(_loss(model, x, y))
        ref.zero_grad()
        _loss(twin, x, y).backward()
        ref.step()
    assert torch.equal(_flat(model), _flat(twin))
    assert not torch.equal(_flat(model), _flat(_no_decay_run()))  # the decay did something


def _no_decay_run() -> nn.Module:
    torch.manual_seed(0)
    model = KindsNet()
    stepper = build_optimizer("adamw", model, OptimArgs(lr=0.01, weight_decay=0.0))
    x, y = _data()
    for _ in range(3):
        stepper.step(_loss(model, x, y))
    return model
