"""Kinds read from the computation (:mod:`hyperfree.optim.infer`), checked against the table.

* The reading agrees with the rules table on EVERY type the table covers: each covered module
  type (Linear, Conv1/2/3d with groups, ConvTranspose1/2/3d with groups, Embedding,
  EmbeddingBag, LayerNorm, RMSNorm, GroupNorm, BatchNorm1/2/3d, SyncBatchNorm, InstanceNorm
  with affine, MultiheadAttention packed / kdim-vdim / bias_kv, RNN tanh and relu, LSTM with
  layers, directions and a projection (fused and unfused), GRU, HF Conv1D by import path, and
  the torch Transformer modules) is run once and what the forward says every parameter is
  equals the table's kind, packing included. A test also checks that every type in
  ``kinds.RULES`` is exercised (``nn.Bilinear`` has an empty entry: nothing to agree on).
* Hand-written models (``handmade.py``): every parameter is read as ``EXPECTED`` says — a
  hand-written norm's weight a gain, a raw ``(d_in, 3d)`` matrix split in three a packed
  ``linear_in_out``, a GLU's ``chunk(2)`` a 2-block matrix, rotary halves NOT packing, a
  ``cls`` token joined to the sequence a bias, a ``(1, T, d)`` table, a scalar and an
  ``exp``-ed ``A_log`` generic, a tied ``F.linear`` head an embedding.
* Per-head packing (GPT-NeoX's ``query_key_value`` viewed ``(heads, 3·hd)`` and chunked) is
  ``Kind("linear", blocks=3, groups=heads)``; a GQA split into unequal parts is not packing.
* ``AGD(model)`` with zero declarations: read from an ``example`` now, or from the first
  forward while it runs; both give the same kinds, preset and step; exactly one ``KindsNote``
  line; the watch is removed afterwards; a state_dict saved after the reading loads into an
  optimiser that has not read yet (a resume) and continues the same trajectory.
Run: ``pytest tests/optim/test_agd_infer.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

import hyperfree
from hyperfree.optim import Kind, kinds as kinds_module
from hyperfree.optim.agd import KindsNote
from hyperfree.optim.infer import read_kinds

from . import handmade as M
from .agd_spec import HFConv1D

X = torch.randn(2, 5, 6)


def _mha(**kw):
    m = nn.MultiheadAttention(6, 2, batch_first=True, **kw)
    kv = (torch.randn(2, 4, kw.get("kdim", 6)), torch.randn(2, 4, kw.get("vdim", 6)))
    return m, (X, *kv), {"need_weights": False}


def _img(*shape):
    return torch.randn(*shape)


COVERED = {
    "linear": lambda: (nn.Linear(6, 4), (X,), {}),
    "conv1d": lambda: (nn.Conv1d(5, 4, 3), (X,), {}),
    "conv2d_groups": lambda: (nn.Conv2d(4, 6, 3, groups=2), (_img(1, 4, 5, 5),), {}),
    "conv2d_depthwise": lambda: (nn.Conv2d(4, 4, 3, groups=4), (_img(1, 4, 5, 5),), {}),
    "conv3d": lambda: (nn.Conv3d(2, 3, 2), (_img(1, 2, 3, 3, 3),), {}),
    "conv_transpose1d": lambda: (nn.ConvTranspose1d(5, 3, 2), (X,), {}),
    "conv_transpose2d_groups": lambda: (nn.ConvTranspose2d(4, 6, 2, groups=2),
                                        (_img(1, 4, 3, 3),), {}),
    "conv_transpose3d": lambda: (nn.ConvTranspose3d(2, 3, 2), (_img(1, 2, 2, 2, 2),), {}),
    "embedding": lambda: (nn.Embedding(10, 4, padding_idx=0), (torch.randint(0, 10, (2, 5)),),
                          {}),
    "embedding_bag": lambda: (nn.EmbeddingBag(10, 4, mode="mean"),
                              (torch.randint(0, 10, (2, 5)),), {}),
    "layernorm": lambda: (nn.LayerNorm(6), (X,), {}),
    "rmsnorm": lambda: (nn.RMSNorm(6), (X,), {}),
    "groupnorm": lambda: (nn.GroupNorm(5, 5), (X,), {}),
    "batchnorm1d": lambda: (nn.BatchNorm1d(5), (X,), {}),
    "batchnorm2d": lambda: (nn.BatchNorm2d(4), (_img(2, 4, 3, 3),), {}),
    "batchnorm3d": lambda: (nn.BatchNorm3d(2), (_img(2, 2, 2, 2, 2),), {}),
    "syncbatchnorm_eval": lambda: (nn.SyncBatchNorm(5).eval(), (X,), {}),
    "instancenorm2d": lambda: (nn.InstanceNorm2d(4, affine=True), (_img(2, 4, 3, 3),), {}),
    "mha": lambda: _mha(),
    "mha_kdim_vdim_bias_kv": lambda: _mha(kdim=5, vdim=3, add_bias_kv=True),
    "mha_eval": lambda: (nn.MultiheadAttention(6, 2, batch_first=True).eval(), (X, X, X), {}),
    "rnn_tanh": lambda: (nn.RNN(6, 3, batch_first=True), (X,), {}),
    "rnn_relu_2layers": lambda: (nn.RNN(6, 3, 2, nonlinearity="relu", batch_first=True), (X,),
                                 {}),
    "lstm": lambda: (nn.LSTM(6, 3, batch_first=True), (X,), {}),
    "lstm_2layers_bidirectional": lambda: (nn.LSTM(6, 3, 2, bidirectional=True,
                                                   batch_first=True), (X,), {}),
    "lstm_proj": lambda: (nn.LSTM(6, 3, proj_size=2, batch_first=True), (X,), {}),
    "gru_bidirectional": lambda: (nn.GRU(6, 3, bidirectional=True, batch_first=True), (X,), {}),
    "hf_conv1d": lambda: (HFConv1D(12, 6), (X,), {}),
    "transformer_encoder_layer": lambda: (nn.TransformerEncoderLayer(6, 2, 12, batch_first=True),
                                          (X,), {}),
    "transformer_decoder_layer": lambda: (nn.TransformerDecoderLayer(6, 2, 12, batch_first=True),
                                          (X, X), {}),
    "transformer": lambda: (nn.Transformer(6, 2, 1, 1, 12, batch_first=True), (X, X), {}),
}


class _Call(nn.Module):
    """Calls ``inner(*args, **kwargs)`` (read_kinds passes a model and one example)."""

    def __init__(self, inner, kwargs):
        super().__init__()
        self.inner, self.kwargs = inner, kwargs

    def forward(self, *args):
        return self.inner(*args, **self.kwargs)


def _read(inner, args, kwargs):
    """The kinds read, without their forks (a place in the graph, not the module's type:
    tests/optim/test_agd_forks.py)."""
    got = read_kinds(_Call(inner, kwargs), tuple(args))
    return {name.removeprefix("inner."): kind and dataclasses.replace(kind, forks=0, terms=0)
            for name, (kind, _) in got.items()}


def _table(model):
    return {i.name: i.kind for i in hyperfree.optim.classify(model)}


@pytest.mark.parametrize("name", list(COVERED))
def test_the_reading_agrees_with_the_table_on_every_covered_type(name):
    torch.manual_seed(0)
    model, args, kwargs = COVERED[name]()
    table = _table(model)
    assert table and all(k is not None for k in table.values())
    assert _read(model, args, kwargs) == table


def test_the_reading_agrees_without_the_fused_cpu_lstm():
    torch.manual_seed(0)
    model = nn.LSTM(6, 3, 2, batch_first=True)
    with torch.backends.mkldnn.flags(enabled=False):
        assert _read(model, (X,), {}) == _table(model)


def test_every_type_of_the_rules_table_is_exercised():
    seen = {type(m) for build in COVERED.values() for m in build()[0].modules()}
    for key, entry in kinds_module.RULES.items():
        if isinstance(key, str):
            assert key == "transformers.modeling_utils.Conv1D" or any(
                kinds_module.type_path(t) == key for t in seen), key
        elif entry:  # nn.Bilinear's entry is empty: it has no rule to agree with
            assert any(issubclass(t, key) for t in seen), key


@pytest.mark.parametrize("name", list(M.MODELS))
def test_hand_written_models_are_read_as_expected(name):
    torch.manual_seed(0)
    model, batch, _ = M.MODELS[name]()
    got = read_kinds(model, M.example(name, batch))
    got = {n: (k and dataclasses.replace(k, forks=0, terms=0), why) for n, (k, why) in got.items()}
    wrong = {n: (str(k or "generic"), M.expected(n), why) for n, (k, why) in got.items()
             if str(k or "generic") != M.expected(n)}
    assert not wrong
    assert len(got) == len(list(model.parameters()))


class NeoXAttention(nn.Module):
    """GPT-NeoX: one Linear(d, 3d) viewed (heads, 3·head_dim) and chunked: per head Q, K, V."""

    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.query_key_value = nn.Linear(d, 3 * d)

    def forward(self, x):
        qkv = self.query_key_value(x).view(*x.shape[:-1], self.heads, -1).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


class GQA(nn.Module):
    """A fused projection split into unequal parts (Q of d, K and V of d/2): not packing."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 2 * d)

    def forward(self, x):
        q, k, v = self.qkv(x).split([8, 4, 4], dim=-1)
        return q * k.repeat(1, 1, 2) + v.repeat(1, 1, 2)


def test_per_head_packing_and_unequal_splits():
    x = torch.randn(2, 3, 8)
    got = read_kinds(NeoXAttention(), (x,))
    assert got["query_key_value.weight"][0] == Kind("linear", blocks=3, groups=2)
    assert got["query_key_value.bias"][0] == Kind("bias", blocks=6)
    assert "3 blocks in each of 2 heads" in got["query_key_value.weight"][1]
    got = read_kinds(GQA(), (x,))
    assert got["qkv.weight"][0] == Kind("linear") and got["qkv.bias"][0] == Kind("bias")


# ---------------------------------------------------------------- AGD with zero declarations
def _notes(record):
    return [w for w in record if issubclass(w.category, KindsNote)]


def _train(model, opt, batch, loss_fn, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def _hooks():
    return len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks)


@pytest.mark.parametrize("name", ["gpt", "ssm"])
def test_first_forward_and_example_give_the_same_kinds_preset_and_steps(name):
    torch.manual_seed(0)
    model, batch, loss_fn = M.MODELS[name]()
    twin = copy.deepcopy(model)
    hooks = _hooks()
    with warnings.catch_warnings(record=True) as now:
        warnings.simplefilter("always")
        eager = hyperfree.AGD(twin, example=M.example(name, batch))
    assert len(_notes(now)) == 1 and "read from the forward" in str(_notes(now)[0].message)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        lazy = hyperfree.AGD(model)
        assert not _notes(later)  # nothing said before anything was read
        assert {i.origin for i in lazy._infos.values()} >= {"pending"}
        assert _hooks() == (hooks[0] + 1, hooks[1] + 1)
        _train(model, lazy, batch, loss_fn, 1)
    assert len(_notes(later)) == 1
    assert _hooks() == hooks  # the watch is gone
    assert lazy.param_groups[0]["kinds"] == eager.param_groups[0]["kinds"]
    assert lazy.preset is eager.preset
    _train(twin, eager, batch, loss_fn, 1)
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f"{n}: {m}")
    report = lazy.kinds_report()
    assert "inferred" in report and "generic" in report and "register_kinds(" in report


def test_a_state_dict_loads_into_an_optimiser_that_has_not_read_yet():
    torch.manual_seed(0)
    model, batch, loss_fn = M.make_ssm()
    resumed_model = copy.deepcopy(model)
    opt = hyperfree.AGD(model)
    _train(model, opt, batch, loss_fn, 2)
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    resumed_model.load_state_dict(weights)
    hooks = _hooks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindsNote)
        resumed = hyperfree.AGD(resumed_model)  # pending: its first forward is to come
    assert _hooks() != hooks
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["kinds"] == opt.param_groups[0]["kinds"]
    assert resumed.preset is opt.preset and _hooks() == hooks  # the saved kinds are final
    _train(model, opt, batch, loss_fn, 2)
    _train(resumed_model, resumed, batch, loss_fn, 2)
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


def test_a_dropped_optimiser_stops_watching_at_the_next_forward():
    torch.manual_seed(0)
    model, batch, loss_fn = M.make_rwkv()
    hooks = _hooks()
    hyperfree.AGD(model)  # dropped at once: nothing will settle
    loss_fn(model, batch)
    assert _hooks() == hooks
