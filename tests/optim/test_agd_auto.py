"""``preset="auto"`` (the default): the preset is chosen once, from the network's structure.

A network with a normalisation layer (LayerNorm, RMSNorm, BatchNorm with or without affine
parameters, GroupNorm, InstanceNorm, or a custom layer whose parameter is declared a ``gain``)
gets ``spectral-momentum``; one without gets ``spectral-fresh`` (docs/agd-stability.md §7).
The choice is the preset itself, so a step under "auto" equals a step under the chosen name,
and the state saved under "auto" resumes under "auto" or under that name.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import AUTO, DEFAULT_PRESET, PRESETS, choose_preset, get_preset, is_normalised


class Scale(nn.Module):
    """A custom norm-like layer: one gain vector, no rule in the table."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _mlp(*middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8, bias=False), *middle, nn.ReLU(),
                         nn.Linear(8, 3, bias=False))


NORMALISED = {
    "layernorm": lambda: _mlp(nn.LayerNorm(8)),
    "rmsnorm": lambda: _mlp(nn.RMSNorm(8)),
    "batchnorm without affine": lambda: _mlp(nn.BatchNorm1d(8, affine=False)),
    "groupnorm": lambda: _mlp(nn.GroupNorm(2, 8)),
    "conv + instancenorm": lambda: nn.Sequential(nn.Conv2d(1, 4, 3, bias=False),
                                                 nn.InstanceNorm2d(4), nn.Flatten()),
}


def test_auto_is_the_default_and_not_a_preset_of_its_own() -> None:
    assert DEFAULT_PRESET == AUTO == "auto" and AUTO not in PRESETS
    with pytest.raises(ValueError, match="chosen from the network"):
        get_preset("auto")
    assert choose_preset("AUTO", normalised=True) is PRESETS["spectral-momentum"]
    assert choose_preset("auto", normalised=False) is PRESETS["spectral-fresh"]
    assert choose_preset("paper", normalised=True) is PRESETS["paper"]  # names pass through


@pytest.mark.parametrize("name", list(NORMALISED))
def test_a_network_with_a_normalisation_layer_gets_spectral_momentum(name: str) -> None:
    model = NORMALISED[name]()
    assert hyperfree.AGD(model).preset is PRESETS["spectral-momentum"]


@pytest.mark.parametrize("model", [_mlp(), nn.LSTM(4, 5), nn.Sequential(
    nn.Embedding(10, 4), nn.Linear(4, 10))], ids=["mlp", "lstm", "embedding+linear"])
def test_a_network_without_one_gets_spectral_fresh(model: nn.Module) -> None:
    assert hyperfree.AGD(model).preset is PRESETS["spectral-fresh"]


def test_a_declared_gain_counts_as_normalisation_and_params_with_model_too() -> None:
    model = _mlp(Scale(8))
    opt = hyperfree.AGD(model, kinds={"1.alpha": "gain"})
    assert opt.preset is PRESETS["spectral-momentum"]
    # the norm layer of the model counts even when AGD is given only some parameters
    normed = _mlp(nn.LayerNorm(8))
    some = [p for n, p in normed.named_parameters() if n.startswith("0.")]
    assert hyperfree.AGD(some, model=normed).preset is PRESETS["spectral-momentum"]
    assert is_normalised(None, [hyperfree.optim.Kind("gain")])
    assert not is_normalised(_mlp(), [hyperfree.optim.Kind("linear")])


@pytest.mark.parametrize("make, chosen", [(lambda: _mlp(), "spectral-fresh"),
                                          (NORMALISED["layernorm"], "spectral-momentum")])
def test_auto_steps_exactly_as_the_chosen_preset_and_resumes_under_either_name(
        make, chosen: str) -> None:
    torch.manual_seed(0)
    model = make().double()
    twin, later = copy.deepcopy(model), copy.deepcopy(model)
    opt, ref = hyperfree.AGD(model), hyperfree.AGD(twin, preset=chosen)
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    for k in range(4):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
        if k == 1:
            saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    later.load_state_dict(weights)
    resumed = hyperfree.AGD(later, preset=chosen)   # the state names the chosen preset
    resumed.load_state_dict(saved)
    for _ in range(2):
        resumed.zero_grad()
        ((later(x) - y) ** 2).mean().backward()
        resumed.step()
    for a, b in zip(later.parameters(), model.parameters()):
        assert torch.equal(a, b)
