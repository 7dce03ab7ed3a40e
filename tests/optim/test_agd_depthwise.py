"""Depthwise convs and rank-one cells: the fast step's shortcuts against the reference twin.

* A depthwise conv (every group's matrix ``1 × 1``) is one plan unit of all its groups'
  element cells (``hyperfree.optim._plan``), not one unit per channel; a conv on a 1-channel
  input, a depthwise conv with a channel multiplier and a head with one output have matrices
  with one column or one row, whose polar factor is exact (``newton_schulz.orthogonalize``).
* Over several steps of every preset (retractions, momentum, the average, the fresh estimate),
  contiguous, ``channels_last`` and a permuted depthwise weight, the fast path equals the twin, which cuts every cell out
  by hand, in float64.
* The depthwise unit is one unit: the plan does not grow with the channels.
Run: ``pytest tests/optim/test_agd_depthwise.py``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS

from .reference import make_agd


class Net(nn.Module):
    """1-channel stem (rank-one cells) -> depthwise 3 x 3 -> depthwise transposed 3 x 3 ->
    depthwise 5 x 5 with a channel multiplier (cells 2 x 1) -> GroupNorm -> 1-D depthwise
    conv -> a one-output head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.dwt = nn.ConvTranspose2d(6, 6, 3, padding=1, groups=6)
        self.dw2 = nn.Conv2d(6, 12, 5, padding=2, groups=6, bias=False)
        self.norm = nn.GroupNorm(3, 12)
        self.dw1d = nn.Conv1d(12, 12, 3, padding=1, groups=12)
        self.head = nn.Linear(12, 1)

    def forward(self, x):
        h = torch.tanh(self.dwt(torch.tanh(self.dw(torch.tanh(self.stem(x))))))
        h = torch.tanh(self.norm(self.dw2(h)))
        h = torch.tanh(self.dw1d(h.flatten(2)))
        return self.head(h.mean(-1))


def _loss(model, t: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(3, 1, 5, 5, generator=gen, dtype=torch.float64)
    return (model(x) - 0.5).square().mean()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "permuted"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_depthwise_and_rank_one_cells_equal_the_twin(preset, layout):
    torch.manual_seed(0)
    model = Net().double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    if layout == "channels_last":
        model.to(memory_format=torch.channels_last)
    if layout == "permuted":  # a depthwise weight stored (k, k, c, 1): one unit per channel
        w = model.dw.weight.detach()
        model.dw.weight = nn.Parameter(w.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1))
        assert not model.dw.weight.is_contiguous() and torch.equal(model.dw.weight, w)
    twin = copy.deepcopy(model)
    opt = make_agd(model, preset=preset, path="fast")
    opt_twin = make_agd(twin, preset=preset, path="reference")
    for t in range(4):
        for m, o in ((model, opt), (twin, opt_twin)):
            o.zero_grad()
            _loss(m, t).backward()
            o.step()
        torch.testing.assert_close(opt.eta, opt_twin.eta, rtol=1e-10, atol=0)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_a_depthwise_conv_is_one_unit_whatever_its_channels():
    from hyperfree.optim._plan import build_plan
    from hyperfree.optim.pieces import FAMILIES
    from hyperfree.optim.rules import Kind

    for channels in (4, 64):
        w = torch.zeros(channels, 1, 7, 7)
        kind = Kind("conv", groups=channels)
        plan = build_plan([w], [kind], FAMILIES["frobenius"])
        assert len(plan.patterns) == 1 and plan.patterns[0].K == channels * 49
        spectral = build_plan([w], [kind], FAMILIES["spectral"])
        assert not spectral.patterns  # spectral: its 1 x 1 matrices' polar factors
        for p in (plan, spectral):    # the retraction's cells: one unit too
            assert len(p.retract_patterns) == 1 and p.retract_patterns[0].K == channels * 49
        # a channel multiplier (cells 2 x 1) stays one unit per group
        mult = build_plan([torch.zeros(2 * channels, 1, 3, 3)], [kind],
                          FAMILIES["frobenius"])
        assert len(mult.patterns) == channels
