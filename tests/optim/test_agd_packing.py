"""Packing is a storage detail: AGD on a packed tensor equals AGD on the separate layers.

``nn.MultiheadAttention`` (packed ``in_proj_weight``) against the same attention written with
three separate ``nn.Linear`` for Q, K, V, and ``nn.LSTM`` (four stacked gates in ``weight_ih`` /
``weight_hh`` and their biases) against the same LSTM written with eight ``nn.Linear`` gate
maps: after copying the weights, the two models compute the same function (checked), and one
AGD step gives the same ``L``, the same η and the same updated weights, for both families and
both code paths (float64, 1e-10). The eight gate maps are declared ``share=2`` (their outputs
are summed into the gates' pre-activation, as W_ih x + W_hh h is), so they count as the LSTM's
two shared matrices do. Run: ``pytest tests/optim/test_agd_packing.py``.

The key bias of attention has a gradient that is zero in exact arithmetic and ~1e-17 noise in
floating point (docs/agd-rules.md §5); the two models produce different noise, so their key
biases move along different (normalised noise) directions. That block is left out of the
weight comparison (it weighs ~1e-17 in G, so η is still compared).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import Kind

from .reference import make_agd

E, HEADS = 6, 2


class SeparateMHA(nn.Module):
    """Multi-head self-attention from three separate Linear maps, as nn.MultiheadAttention."""

    def __init__(self, bias: bool):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(E, E, bias=bias) for _ in range(3))
        self.out = nn.Linear(E, E, bias=bias)

    def forward(self, x):  # (B, T, E)
        B, T, _ = x.shape
        dh = E // HEADS

        def heads(t):
            return t.view(B, T, HEADS, dh).transpose(1, 2)  # (B, h, T, dh)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(B, T, E))


def _mha_pair(bias: bool):
    torch.manual_seed(0)
    packed = nn.MultiheadAttention(E, HEADS, bias=bias, batch_first=True).double()
    sep = SeparateMHA(bias).double()
    with torch.no_grad():
        if bias:
            packed.in_proj_bias.normal_()
        for j, lin in enumerate((sep.q, sep.k, sep.v)):
            lin.weight.copy_(packed.in_proj_weight[j * E:(j + 1) * E])
            if bias:
                lin.bias.copy_(packed.in_proj_bias[j * E:(j + 1) * E])
        sep.out.weight.copy_(packed.out_proj.weight)
        if bias:
            sep.out.bias.copy_(packed.out_proj.bias)
    return packed, sep


def _pairs_mha(packed, sep):
    """(packed slice, separate tensor, compare?) for every cell."""
    out = []
    for j, lin in enumerate((sep.q, sep.k, sep.v)):
        rows = slice(j * E, (j + 1) * E)
        out.append((packed.in_proj_weight[rows], lin.weight, True))
        if lin.bias is not None:
            out.append((packed.in_proj_bias[rows], lin.bias, j != 1))  # K bias: noise
    out.append((packed.out_proj.weight, sep.out.weight, True))
    if sep.out.bias is not None:
        out.append((packed.out_proj.bias, sep.out.bias, True))
    return out


def _step_both(a, b, preset, path, kinds_b=None):
    oa = make_agd(a, preset=preset, path=path)
    ob = make_agd(b, preset=preset, path=path, kinds=kinds_b)
    oa.step()
    ob.step()
    assert oa.L == ob.L
    assert math.isclose(float(oa.eta), float(ob.eta), rel_tol=1e-10)
    return oa


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("preset", ["paper", "spectral"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_packed_attention_equals_three_linear_layers(bias, preset, path):
    packed, sep = _mha_pair(bias)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    y_packed = packed(x, x, x, need_weights=False)[0]
    y_sep = sep(x)
    torch.testing.assert_close(y_packed, y_sep, rtol=1e-12, atol=1e-12)
    target = torch.randn_like(y_sep)
    ((y_packed - target) ** 2).sum().backward()
    ((y_sep - target) ** 2).sum().backward()
    before = [(a.detach().clone(), b.detach().clone()) for a, b, _ in _pairs_mha(packed, sep)]
    opt = _step_both(packed, sep, preset, path)
    assert opt.L == 4
    for (a, b, compare), (a0, _) in zip(_pairs_mha(packed, sep), before):
        if compare:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            assert (a - a0).abs().max() > 1e-6  # it moved


class GateLSTM(nn.Module):
    """One-layer LSTM with each gate's input and hidden maps as a separate nn.Linear."""

    def __init__(self, d_in: int, H: int):
        super().__init__()
        self.H = H
        self.ih = nn.ModuleList(nn.Linear(d_in, H) for _ in range(4))  # gates i, f, g, o
        self.hh = nn.ModuleList(nn.Linear(H, H) for _ in range(4))

    def forward(self, x):  # (T, B, d_in)
        h = c = x.new_zeros(x.shape[1], self.H)
        outs = []
        for t in range(x.shape[0]):
            i, f, g, o = (self.ih[j](x[t]) + self.hh[j](h) for j in range(4))
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs)


def _lstm_pairs(lstm, gates):
    H = lstm.hidden_size
    out = []
    for j in range(4):
        rows = slice(j * H, (j + 1) * H)
        out += [(lstm.weight_ih_l0[rows], gates.ih[j].weight),
                (lstm.weight_hh_l0[rows], gates.hh[j].weight),
                (lstm.bias_ih_l0[rows], gates.ih[j].bias),
                (lstm.bias_hh_l0[rows], gates.hh[j].bias)]
    return out


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_lstm_gates_equal_separately_normalised_gate_matrices(preset, path):
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 5).double()
    gates = GateLSTM(4, 5).double()
    with torch.no_grad():
        for a, b in _lstm_pairs(lstm, gates):
            b.copy_(a)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    y = lstm(x)[0]
    y2 = gates(x)
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    target = torch.randn_like(y)
    ((y - target) ** 2).sum().backward()
    ((y2 - target) ** 2).sum().backward()
    # the gate maps of W_ih x and W_hh h are summed into one pre-activation: declared as such,
    # they carry half a layer each, as the packed W_ih and W_hh do (4 gates, half of each)
    shared = {f"{side}.{j}.weight": Kind("linear", share=2) for side in ("ih", "hh")
              for j in range(4)}
    opt = _step_both(lstm, gates, preset, path, kinds_b=shared)
    assert opt.L == 4
    for a, b in _lstm_pairs(lstm, gates):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
