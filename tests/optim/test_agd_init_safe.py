"""AGD's init never harms, and AGD from a model's own or trained weights is safe.

* A tied embedding / output head (one ``Parameter``, an ``nn.Embedding`` and an ``nn.Linear``)
  in a pre-norm transformer: ``AGD(model, example=ids).init_weights()`` reads the head's input
  and puts the table's rows at norm ``1/RMS(head input)`` — a starting loss within 1.5 ln V
  (the embedding rule's rows of RMS 1 start it far above, at logits of RMS √d, and
  ``init_weights`` without an example says so in a warning). ``hyperfree.optim.init_weights(model,
  example=...)`` does the same. The same holds for a head tied through ``F.linear``.
* Kinds read from the forward and generic tensors keep the model's own values (an SSM's
  ``A_log`` and ``D``, a hand-written norm's gain); table kinds, packed ones included, are
  initialised by their rule.
* Continuing from trained weights with a FRESH AGD (no state, no init): the first steps lower
  the loss, they do not jump.
Run: ``pytest tests/optim/test_agd_init_safe.py``.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hyperfree
from hyperfree.optim.agd import KindsNote

from . import handmade as M

V, T, D = 256, 16, 64


class TiedLM(nn.Module):
    """Pre-norm transformer whose head is the token embedding (GPT-2's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(
            D, 4, 4 * D, dropout=0.0, norm_first=True, batch_first=True) for _ in range(2))
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, V, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (8, T), generator=gen), torch.randint(0, V, (8, T), generator=gen)


def _loss(model, ids, target):
    with torch.no_grad():
        return float(F.cross_entropy(model(ids).flatten(0, 1), target.flatten()))


def _build():
    torch.manual_seed(0)
    return TiedLM()


def test_tied_head_starts_near_ln_v_after_init_weights_with_an_example():
    ids, target = _data()
    model = _build()
    hyperfree.AGD(model, example=ids).init_weights(torch.Generator().manual_seed(1))
    start = _loss(model, ids, target)
    assert start < 1.5 * math.log(V), (start, math.log(V))
    rows = model.tok.weight.detach().norm(dim=1)
    assert float(rows.max() - rows.min()) < 1e-5 and float(rows[0]) < 0.5 * math.sqrt(D)
    twin = _build()
    hyperfree.optim.init_weights(twin, example=ids, generator=torch.Generator().manual_seed(1))
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_without_an_example_the_init_says_the_logits_start_too_large():
    ids, target = _data()
    model = _build()
    with pytest.warns(UserWarning, match=r"tok\.weight is an embedding tied to the output head"):
        hyperfree.AGD(model).init_weights()
    assert _loss(model, ids, target) > 3 * math.log(V)  # logits of RMS √d: why it is calibrated


def test_a_head_tied_through_f_linear_is_calibrated_too():
    torch.manual_seed(0)
    model, batch, loss_fn = M.make_gpt(norm=M.RMSNorm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindsNote)
        opt = hyperfree.AGD(model, example=M.example("gpt", batch))
    opt.init_weights(torch.Generator().manual_seed(0))
    assert float(loss_fn(model, batch)) < 1.5 * math.log(M.V)


def test_read_and_generic_kinds_keep_the_models_own_values():
    torch.manual_seed(0)
    model, batch, _ = M.make_ssm()
    with torch.no_grad():
        model.norm.weight.mul_(1.5)  # away from anything a rule would set
        model.D.add_(0.25)
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindsNote)
        opt = hyperfree.AGD(model, example=M.example("ssm", batch))
    opt.init_weights(torch.Generator().manual_seed(0))
    origin = {i.name: i.origin for i in opt._infos.values()}
    assert origin["A_log"] == "generic" and origin["D"] == "inferred"
    assert origin["norm.weight"] == "inferred" and origin["in_proj.weight"] == "packed"
    for name in ("A_log", "D", "norm.weight"):
        assert torch.equal(dict(model.named_parameters())[name], own[name]), name
    gate_x = model.in_proj.weight.detach().view(2, -1, M.D)  # two blocks, each Haar x σ
    for block in gate_x:
        sv = torch.linalg.svdvals(block)
        torch.testing.assert_close(sv, torch.full_like(sv, math.sqrt(block.shape[0] / M.D)))
    assert not torch.equal(model.out.weight, own["out.weight"])


@pytest.mark.parametrize("name", ["gpt", "vit"])
def test_a_fresh_agd_on_trained_weights_does_not_jump(name):
    torch.manual_seed(0)
    model, batch, loss_fn = M.MODELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindsNote)
        opt = hyperfree.AGD(model, example=M.example(name, batch))
        for _ in range(20):
            opt.zero_grad()
            loss_fn(model, batch).backward()
            opt.step()
        trained = float(loss_fn(model, batch))
    continued = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindsNote)
        fresh = hyperfree.AGD(continued, example=M.example(name, batch))
    losses = []
    for _ in range(3):
        fresh.zero_grad()
        loss_fn(continued, batch).backward()
        fresh.step()
        losses.append(float(loss_fn(continued, batch)))
    assert max(losses) <= trained * 1.001, (trained, losses)
