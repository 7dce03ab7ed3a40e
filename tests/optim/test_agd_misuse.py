"""The tensors the old, shape-based AGD accepted but handled wrong, each checked against its rule.

The previous AGD (before the parameter kinds) read every 2-D tensor as ``(d_out, d_in)`` and
every 4-D one as ``(c_out, c_in, k, k)``, normalised each tensor as one matrix and refused 1-D
tensors. Each test below uses only bias-free tensors it accepted and only the API it had
(``AGD(model)``, ``step()``, ``L``), so it runs unchanged against it and fails there:

* HF ``Conv1D`` (stored ``(d_in, d_out)``): ``s`` must be ``√(d_out/d_in)``, not its inverse;
* ``ConvTranspose2d`` (stored ``(c_in, c_out, k, k)``) with ``c_in ≠ c_out``: ``√(c_out/c_in)/k``;
* packed MHA ``in_proj_weight`` and LSTM gates: with one block's gradient 1000× larger, every
  other block still moves by its full budget ``(η/L)·σ`` (and ``L`` counts every block);
* ``Embedding``: the table moves by ``(η/L)·√d``, not by the Linear rule's ``√(V/d)``;
* a tied embedding/head: counted once in ``L`` and moved once, along the summed gradient.

η is computed by the documented formula (:mod:`tests.optim.agd_spec`), so no test relies on
how the optimiser reports it. Run: ``pytest tests/optim/test_agd_misuse.py``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import hyperfree

from . import agd_spec as S


def _step(model, rules):
    """One paper-preset AGD step (the frobenius family); returns (spec, optimiser, before)."""
    params = dict(model.named_parameters())
    spec = S.spec_step(params, rules, "frobenius")
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = hyperfree.AGD(model, preset="paper")
    opt.step()
    S.assert_step_equals(params, spec)
    return spec, opt, before


def _fro(t):
    return float(t.detach().double().norm())


def test_hf_conv1d_scale_is_not_inverted():
    torch.manual_seed(0)
    model = nn.Sequential(S.HFConv1D(12, 3, bias=False)).double()  # weight (d_in=3, d_out=12)
    model[0].weight.grad = torch.randn(3, 12, dtype=torch.float64)
    spec, _, before = _step(model, {"0.weight": S.in_out((3, 12))})
    moved = _fro(model[0].weight - before["0.weight"])
    assert math.isclose(moved, spec.eta * math.sqrt(12 / 3), rel_tol=1e-10)


def test_conv_transpose_scale_uses_c_out_over_c_in():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(2, 6, 3, bias=False)).double()  # (c_in, c_out, k, k)
    model[0].weight.grad = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    spec, _, before = _step(model, {"0.weight": S.conv_transpose((2, 6, 3, 3))})
    delta = model[0].weight - before["0.weight"]
    for i in range(3):
        for j in range(3):  # every kernel slice moves by (η/L)·√(c_out/c_in)/√K
            assert math.isclose(_fro(delta[:, :, i, j]), spec.eta * math.sqrt(6 / 2) / 3,
                                rel_tol=1e-10)


def test_packed_attention_blocks_are_normalised_separately():
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(6, 2, bias=False)).double()
    mha = model[0]
    g = torch.randn(18, 6, dtype=torch.float64)
    g[:6] *= 1e3  # the Q block's gradient dwarfs K's and V's
    mha.in_proj_weight.grad = g
    mha.out_proj.weight.grad = torch.randn(6, 6, dtype=torch.float64)
    spec, opt, before = _step(model, {"0.in_proj_weight": S.linear((18, 6), 3),
                                      "0.out_proj.weight": S.linear((6, 6))})
    assert opt.L == spec.L == 4
    delta = mha.in_proj_weight - before["0.in_proj_weight"]
    for b in range(3):  # Q, K, V each move by (η/L)·σ, σ = √(6/6)
        assert math.isclose(_fro(delta[6 * b:6 * (b + 1)]), spec.eta / 4, rel_tol=1e-10), b


def test_lstm_gates_are_normalised_separately():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 5, bias=False).double()
    g = torch.randn(20, 4, dtype=torch.float64)
    g[5:10] *= 1e3  # the forget gate's gradient dwarfs the others
    lstm.weight_ih_l0.grad = g
    lstm.weight_hh_l0.grad = torch.randn(20, 5, dtype=torch.float64)
    # W_ih and W_hh are summed into the gates: one layer of 4 gate blocks, half each (L = 4)
    spec, opt, before = _step(lstm, {"weight_ih_l0": S.linear((20, 4), 4, share=2),
                                     "weight_hh_l0": S.linear((20, 5), 4, share=2)})
    assert opt.L == spec.L == 4
    for name, d_in in (("weight_ih_l0", 4), ("weight_hh_l0", 5)):
        delta = getattr(lstm, name) - before[name]
        for b in range(4):
            assert math.isclose(_fro(delta[5 * b:5 * (b + 1)]), spec.eta / 4 * math.sqrt(5 / d_in),
                                rel_tol=1e-10), (name, b)


def test_embedding_uses_the_table_rule_not_the_linear_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 4), nn.Linear(4, 3, bias=False)).double()
    ids = torch.tensor([[1, 2, 3, 2], [7, 1, 0, 9]])
    model(ids).square().sum().backward()
    spec, opt, before = _step(model, {"0.weight": S.embedding((50, 4), "frobenius"),
                                      "1.weight": S.linear((3, 4))})
    moved = _fro(model[0].weight - before["0.weight"])
    assert opt.L == 2
    assert math.isclose(moved, spec.eta / 2 * math.sqrt(4), rel_tol=1e-10)
    assert not math.isclose(moved, spec.eta / 2 * math.sqrt(50 / 4), rel_tol=0.1)


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.mid = nn.Linear(6, 6, bias=False)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.mid(self.embed(ids))))


def test_tied_weight_counted_once_and_moved_once_along_the_summed_gradient():
    torch.manual_seed(0)
    model = TiedLM().double()
    ids = torch.tensor([[1, 2, 3], [4, 1, 5]])
    # The two roles' gradients, separately: through the embedding and through the head.
    W = model.embed.weight
    target = torch.randn(2, 3, 10, dtype=torch.float64)

    def loss(as_embedding, as_head):
        return ((torch.tanh(model.mid(as_embedding[ids])) @ as_head.T - target) ** 2).sum()

    g_embed = torch.autograd.grad(loss(W, W.detach()), W)[0]
    g_head = torch.autograd.grad(loss(W.detach(), W), W)[0]
    model.zero_grad()
    ((model(ids) - target) ** 2).sum().backward()
    summed = model.embed.weight.grad
    torch.testing.assert_close(summed, g_embed + g_head, rtol=1e-12, atol=1e-12)
    assert g_embed.norm() > 0 and g_head.norm() > 0
    spec, opt, before = _step(model, {"embed.weight": S.embedding((10, 6), "frobenius"),
                                      "mid.weight": S.linear((6, 6))})
    assert opt.L == spec.L == 2
    delta = model.embed.weight.detach() - before["embed.weight"]
    assert math.isclose(_fro(delta), spec.eta / 2 * math.sqrt(6), rel_tol=1e-10)  # once
    cos = float((delta * summed).sum()) / (_fro(delta) * _fro(summed))
    assert math.isclose(cos, -1.0, rel_tol=1e-12)  # along minus the summed gradient
