"""AGD(model) with ZERO declarations on torch's transformer modules and hand-written models.

Each model is built, handed to ``hyperfree.AGD(model)`` with nothing else (no ``kinds=``, no
``register_kinds``, no example: what the table does not cover is read from the first forward),
and trained 10 steps on one batch: the loss ends lower than it started, every parameter moved,
no parameter is left pending, and at most one ``KindsNote`` line was said. The hand-written
models (``handmade.py``) have their own norm classes — one named ``LayerNorm`` — raw packed
matrices, a ``cls`` token, position tables, scalars and SSM/RWKV tensors. (The Hugging Face
families are in ``tests/ecosystem/test_hf_zoo.py``.)
Run: ``pytest tests/optim/test_agd_zoo.py``.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hyperfree
from hyperfree.optim.agd import KindsNote

from . import handmade as M

V, T, D = 32, 8, 16


class Seq2Seq(nn.Module):
    """nn.Transformer between token embeddings and a head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.core = nn.Transformer(D, 2, 1, 1, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(D, V)

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(self.core(x, x, tgt_mask=nn.Transformer.generate_square_subsequent_mask(
            ids.shape[1]), tgt_is_causal=True))


class Encoder(nn.Module):
    """nn.TransformerEncoder (post-norm) over embeddings, a learned position table."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.pos = nn.Parameter(torch.zeros(T, D))
        layer = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True)
        self.core = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(D, V)

    def forward(self, ids):
        return self.head(self.core(self.embed(ids) + self.pos[: ids.shape[1]]))


class Decoder(nn.Module):
    """nn.TransformerDecoder (pre-norm) attending to a memory of the same tokens."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        layer = nn.TransformerDecoderLayer(D, 2, 32, dropout=0.0, norm_first=True,
                                           batch_first=True)
        self.core = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(D))
        self.head = nn.Linear(D, V, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(self.core(x, x))


def _torch_model(cls):
    def make():
        ids = torch.randint(0, V, (4, T + 1), generator=torch.Generator().manual_seed(0))

        def loss(model, ids):
            return F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        return cls(), ids, loss
    return make


ZOO = {"nn.Transformer": _torch_model(Seq2Seq), "nn.TransformerEncoder": _torch_model(Encoder),
       "nn.TransformerDecoder (tied)": _torch_model(Decoder), **M.MODELS}


@pytest.mark.parametrize("name", list(ZOO))
def test_zero_declarations_train_ten_steps_and_move_every_parameter(name):
    torch.manual_seed(0)
    model, batch, loss_fn = ZOO[name]()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        opt = hyperfree.AGD(model)
        losses = []
        for _ in range(10):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    still = [n for n, p in model.named_parameters() if torch.equal(p, start[n])]
    assert not still
    assert all(i.origin != "pending" and i.kind is not None for i in opt._infos.values())
    notes = [w for w in record if issubclass(w.category, KindsNote)]
    table_only = all(i.origin == "table" for i in opt._infos.values())
    assert len(notes) == (0 if table_only else 1)
