"""A stream's terms (``hyperfree.optim._paths.Paths.terms``, ``docs/agd-stability.md`` §16): a
residual branch that joins a stream of sums of sums — ``x + b_1 + b_2 + … + b_K`` until a
norm, a head or any op that is not such a sum — is one of its ``K + 1`` terms, and the
default's step of its tensors is √(K + 1) long in its σ where §10's one fork gives √2; G keeps
the forks' σ. An isolated sum (a post-activation block, a sum inside a branch) adds nothing to
the forks, so its kind records no terms and every such model steps exactly as before.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import DEFAULT_PRESET, PRESETS, Kind
from hyperfree.optim.infer import read_kinds

from .reference import ReferenceAGD
from .test_agd_forks import Residual, X, _steps


def _kinds(model: nn.Module, example) -> dict[str, Kind]:
    return {n.removesuffix(".weight"): k for n, (k, _) in read_kinds(model, example).items()
            if n.endswith("weight")}


class PreNorm(nn.Module):
    """A pre-norm stream of ``blocks`` branches, ``parallel``: two per block from one norm (GPT-
    NeoX's ``h + attn(n(h)) + mlp(n(h))``); ``post``: ``relu(h + f(h))`` instead (each block's
    sum ends at its ReLU)."""

    def __init__(self, blocks: int, parallel: bool = False, post: bool = False) -> None:
        super().__init__()
        self.parallel, self.post = parallel, post
        self.stem, self.head = nn.Linear(4, 8), nn.Linear(8, 3)
        self.norm = nn.ModuleList(nn.LayerNorm(8) for _ in range(blocks))
        self.f = nn.ModuleList(nn.Linear(8, 8) for _ in range(blocks))
        self.g = nn.ModuleList(nn.Linear(8, 8) for _ in range(blocks if parallel else 0))

    def forward(self, x):
        h = self.stem(x)
        for j, (n, f) in enumerate(zip(self.norm, self.f)):
            if self.post:
                h = torch.relu(h + torch.tanh(f(h)))
            elif self.parallel:
                u = n(h)
                h = h + torch.tanh(f(u)) + torch.tanh(self.g[j](u))
            else:
                h = h + torch.tanh(f(n(h)))
        return self.head(h)


@pytest.mark.parametrize("blocks", [2, 3, 6])
def test_every_branch_of_a_pre_norm_stream_is_one_of_its_terms(blocks):
    got = _kinds(PreNorm(blocks), X)
    for j in range(blocks):
        assert (got[f"f.{j}"].forks, got[f"f.{j}"].terms) == (1, blocks + 1)
        assert (got[f"norm.{j}"].forks, got[f"norm.{j}"].terms) == (1, blocks + 1)
    assert got["stem"] == Kind("linear") and got["head"] == Kind("linear")
    assert got["f.0"].stream_scale == pytest.approx(math.sqrt(blocks + 1))


def test_one_branch_or_an_isolated_sum_records_no_terms():
    """Two terms are what the fork already says (√2): the kind stays as §10 reads it."""
    assert _kinds(PreNorm(1), X)["f.0"] == Kind("linear", forks=1)
    post = _kinds(PreNorm(4, post=True), X)  # each sum ends at its ReLU: a stream of 2
    assert all(post[f"f.{j}"] == Kind("linear", forks=1) for j in range(4))
    nested = _kinds(Residual(nested=True), X)  # a sum inside a branch: 2 × 2 = 2^forks
    assert nested["inner"] == Kind("linear", forks=2) and nested["a"] == Kind("linear", forks=1)


def test_parallel_branches_count_once_per_stream():
    """GPT-NeoX's ``h + attn + mlp``: two forks (two sums), one stream of 2K + 1 terms."""
    got = _kinds(PreNorm(3, parallel=True), X)
    assert (got["f.0"].forks, got["f.0"].terms) == (2, 7)
    assert (got["g.2"].forks, got["g.2"].terms) == (1, 7)


def test_the_stream_lengthens_the_step_and_leaves_g_alone():
    torch.manual_seed(0)
    model = PreNorm(3).double()
    before, twin = copy.deepcopy(model), copy.deepcopy(model)
    plain = dataclasses.replace(PRESETS[DEFAULT_PRESET], name="plain", streams=False)
    bare = dataclasses.replace(PRESETS[DEFAULT_PRESET], name="bare", retraction=None)
    bare_plain = dataclasses.replace(plain, name="bare-plain", retraction=None)
    e1 = _steps(model, hyperfree.AGD(model, preset=bare), 1)
    e2 = _steps(twin, hyperfree.AGD(twin, preset=bare_plain), 1)
    assert e1 == e2  # G, and so η, are the forks' alone
    moved = {n: float((p - q).norm()) for (n, p), q in zip(model.named_parameters(),
                                                           before.parameters())}
    plain_moved = {n: float((p - q).norm()) for (n, p), q in zip(twin.named_parameters(),
                                                                 before.parameters())}
    for name in ("f.0.weight", "f.2.weight", "norm.1.weight"):  # 4 terms: √4 against √2
        assert moved[name] == pytest.approx(math.sqrt(2) * plain_moved[name], rel=1e-9)
    for name in ("stem.weight", "head.weight"):
        assert moved[name] == pytest.approx(plain_moved[name], rel=1e-12)
    assert PRESETS[DEFAULT_PRESET].streams and not plain.streams


@pytest.mark.parametrize("forks", [True, False])
def test_the_fast_step_equals_the_reference_twin_in_float64(forks):
    torch.manual_seed(0)
    model = PreNorm(3, parallel=True).double()
    twin = copy.deepcopy(model)
    preset = dataclasses.replace(PRESETS[DEFAULT_PRESET], name="streams", forks=forks)
    fast, ref = hyperfree.AGD(model, preset=preset), ReferenceAGD(twin, preset=preset)
    e1, e2 = _steps(model, fast, 5), _steps(twin, ref, 5)
    assert e1 == pytest.approx(e2, rel=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_the_terms_travel_in_the_state_dict_and_resume_exactly():
    torch.manual_seed(0)
    model = PreNorm(3).double()
    opt = hyperfree.AGD(model)
    _steps(model, opt, 2)
    kinds = [Kind(*k) for g in opt.param_groups for k in g["kinds"]]
    assert any(k.terms == 4 for k in kinds)
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    model2 = PreNorm(3).double()
    model2.load_state_dict(weights)
    opt2 = hyperfree.AGD(model2)  # not read yet: the saved terms load
    opt2.load_state_dict(saved)
    assert [g["kinds"] for g in opt2.param_groups] == [g["kinds"] for g in opt.param_groups]
    assert _steps(model2, opt2, 3) == _steps(model, opt, 3)
    for p, q in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_terms_count_below_zero_is_refused():
    with pytest.raises(ValueError, match="terms must be an integer >= 0"):
        Kind("linear", forks=1, terms=-1)


def test_the_kinds_report_pins_the_terms_it_read():
    """Pasted, the report's code declares the terms too: nothing read, the same kinds."""
    torch.manual_seed(0)
    model = PreNorm(3)
    opt = hyperfree.AGD(model, example=X)
    code = opt.kinds_report().split("paste:")[1]
    assert 'Kind("linear", forks=1, terms=4)' in code
    pinned = hyperfree.AGD(model, infer=False, kinds={
        n: Kind(*k) for g in opt.param_groups for n, k in zip(g["param_names"], g["kinds"])})
    assert pinned.param_groups[0]["kinds"] == opt.param_groups[0]["kinds"]


class Viewed(PreNorm):
    """:class:`PreNorm` whose blocks see their input through a view, as FSDP2's hooks make
    them (``RegisterPostBackwardFunction`` returns its inputs: ``aten.view``)."""

    def forward(self, x):
        h = self.stem(x)
        for n, f in zip(self.norm, self.f):
            h = h.view_as(h)
            h = h + torch.tanh(f(n(h.view(h.shape))))
        return self.head(h.transpose(0, 1).contiguous().transpose(0, 1))


def test_a_view_of_the_stream_is_the_same_stream():
    got, plain = _kinds(Viewed(3), X), _kinds(PreNorm(3), X)
    assert got == plain and got["f.1"].terms == 4
