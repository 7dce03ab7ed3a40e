"""Forks are counted on the forward's paths, not on lineages (``hyperfree.optim._paths``): a sum
counts for a tensor only when every path from it to the output crosses that sum on one side.

The lineage alone over-counted whatever a sum's operand had computed before the fork: T5's
relative position bias (made in the first block, added to every later block's scores) gave
the first block's tensors a fork per later block, an encoder feeding several cross-attention
branches a fork per branch. Dead ends (a finiteness check, a cache) must not hide a fork, and
a tensor that never reaches the last node keeps the lineage's count.
"""
from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import hyperfree
from hyperfree.optim import Kind
from hyperfree.optim._paths import Paths, _post_dominators
from hyperfree.optim.infer import read_kinds

from .reference import ReferenceAGD
from .test_agd_forks import Residual, X


def _forks(model: nn.Module, example) -> dict[str, int]:
    return {n.removesuffix(".weight"): k.forks for n, (k, _) in read_kinds(model, example).items()
            if n.endswith("weight")}


class SharedBias(nn.Module):
    """T5's relative position bias in miniature: a table made in the first block and added to
    the scores of every block; each block is a residual branch ``h + v(softmax(q(h) h^T) h)``."""

    def __init__(self, blocks: int = 3) -> None:
        super().__init__()
        self.emb, self.bias, self.head = nn.Embedding(10, 8), nn.Embedding(6, 1), nn.Linear(8, 10)
        self.q = nn.ModuleList(nn.Linear(8, 8, bias=False) for _ in range(blocks))
        self.v = nn.ModuleList(nn.Linear(8, 8, bias=False) for _ in range(blocks))

    def forward(self, ids):
        h, pos = self.emb(ids), None
        for q, v in zip(self.q, self.v):
            if pos is None:
                pos = self.bias(torch.arange(ids.shape[1])).squeeze(-1)
            scores = q(h) @ h.transpose(1, 2) + pos
            h = h + v(scores.softmax(-1) @ h)
        return self.head(h)


IDS = torch.randint(0, 10, (2, 6), generator=torch.Generator().manual_seed(0))


def test_a_bias_shared_by_every_block_forks_only_what_is_inside_its_sums():
    got = _forks(SharedBias(), IDS)
    # each block's own residual: 1; a later block's query is inside its `scores + pos` too;
    # the table and the embedding reach the output around every sum: none
    assert got == {"emb": 0, "bias": 0, "head": 0, "q.0": 1, "v.0": 1, "q.1": 2, "v.1": 1,
                   "q.2": 2, "v.2": 1}


class CrossBranches(nn.Module):
    """An encoder ``enc = tanh(E x)`` feeding ``branches`` cross-attention-like branches of a
    decoder stream: ``h + a_k(h) * tanh(k_k(enc))``."""

    def __init__(self, branches: int) -> None:
        super().__init__()
        self.E, self.stem, self.head = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 3)
        self.a = nn.ModuleList(nn.Linear(8, 8, bias=False) for _ in range(branches))
        self.k = nn.ModuleList(nn.Linear(8, 8, bias=False) for _ in range(branches))

    def forward(self, x):
        enc, h = torch.tanh(self.E(x)), torch.tanh(self.stem(x))
        for a, k in zip(self.a, self.k):
            h = h + a(h) * torch.tanh(k(enc))
        return self.head(h)


@pytest.mark.parametrize("branches", [1, 2])
def test_an_encoder_forks_only_when_one_branch_carries_all_of_it(branches):
    got = _forks(CrossBranches(branches), X)
    assert got["E"] == (1 if branches == 1 else 0)  # two branches: each path skips one sum
    assert all(got[f"{p}.{j}"] == 1 for p in "ak" for j in range(branches))
    assert got["stem"] == got["head"] == 0


class DeadEnds(Residual):
    """:class:`Residual` that also checks its branch for non-finite values and keeps a copy of
    it, as a cache would: neither reaches the output."""

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        u = torch.tanh(self.a(h))
        self.finite = bool(torch.isfinite(u).all())
        self.cache = torch.cat([u, u])
        return self.head(h + torch.tanh(self.b(u)))


def test_dead_ends_do_not_hide_a_fork():
    assert _forks(DeadEnds(), X) == _forks(Residual(), X) == {
        "stem": 0, "a": 1, "b": 1, "head": 0}


class TwoHeads(nn.Module):
    """Returns (y2, y1) with y2's residual block computed first: its tensors do not reach the
    forward's last node (y1), so they keep the lineage's count."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.head1, self.head2 = nn.Linear(8, 3), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        y2 = self.head2(h + torch.tanh(self.b(h)))
        y1 = self.head1(h + torch.tanh(self.a(h)))
        return y2, y1


def test_a_second_head_keeps_the_lineage_count():
    assert _forks(TwoHeads(), X) == {"stem": 0, "a": 1, "b": 1, "head1": 0, "head2": 0}


def test_the_default_preset_steps_by_the_paths_forks():
    """The forks the paths give are the ones AGD's default scales σ by (√2 per fork)."""
    opt = hyperfree.AGD(SharedBias(), example=IDS)
    group = opt.param_groups[0]
    forks = {n: Kind(*k).forks for n, k in zip(group["param_names"], group["kinds"])}
    assert forks["q.1.weight"] == 2 and forks["q.0.weight"] == 1 and forks["emb.weight"] == 0


def test_post_dominators_of_a_diamond_with_a_dead_end():
    """Node 0 forks into 1 and 2, which the last node 4 joins; 3 is a dead end of 1. Parameter
    0 is consumed by 1, parameter 1 by 2: each is on one side of the join at 4. A path from 1
    into 3 does not reach the output, so 1 still post-dominates parameter 0."""
    paths = Paths({})
    paths._children = [[1, 2], [3, 4], [4], [], []]
    paths._consumers = {0: [1], 1: [2]}
    paths._sides = [(1, frozenset({0}), 4), (2, frozenset({1}), 4)]  # (operand, side, join)
    assert paths.forks(2) == [1, 1]
    paths._children = [[1, 2], [3, 4], [4], [4], []]  # 3 now reaches the output around 1? no:
    assert paths.forks(2) == [1, 1]                  # 3 descends from 1, so 1 still dominates
    paths._consumers = {0: [1, 3], 1: [2]}           # parameter 0 also consumed by 3: a path
    assert paths.forks(2) == [0, 1]                  # 0 -> 3 -> 4 skips the side at 1


def test_the_benchmarks_lineage_variant_is_the_count_before_paths():
    """benchmarks/hf_forks.py compares the two counts (docs/agd-stability.md §15): its
    ``lineage_forks`` counts every sum whose lineage holds a tensor, and restores the paths."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "hf_forks.py"
    spec = importlib.util.spec_from_file_location("hf_forks", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    paths, joins = _forks(SharedBias(), IDS), Paths.fork_joins
    with script.lineage_forks():
        lineage = _forks(SharedBias(), IDS)
    assert Paths.fork_joins is joins and _forks(SharedBias(), IDS) == paths  # restored
    # the first block's tensors sit in the lineage of both later `scores + pos` sums
    assert (paths["q.0"], lineage["q.0"]) == (1, 3) and (paths["emb"], lineage["emb"]) == (0, 2)
    assert lineage["q.2"] == paths["q.2"] == 2  # the last block: the same either way


class TimeMix(nn.Module):
    """RWKV's time mixing in miniature, per block ``h + out(wkv)``: a token-shift mix
    ``x·μ + x₋₁·(1 − μ)`` (μ used twice), then a recurrence over the T steps that writes each
    step's output into a buffer, ``wkv[:, t] = ...``, with a bonus ``first`` added at every
    step (used T times) and a ``decay`` entering through ``exp`` (no rule: generic)."""

    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(10, 8), nn.Linear(8, 10)
        self.mix = nn.ParameterList(nn.Parameter(torch.full((1, 1, 8), 0.5))
                                    for _ in range(blocks))
        self.decay = nn.ParameterList(nn.Parameter(torch.zeros(8)) for _ in range(blocks))
        self.first = nn.ParameterList(nn.Parameter(torch.zeros(8)) for _ in range(blocks))
        self.k = nn.ModuleList(nn.Linear(8, 8, bias=False) for _ in range(blocks))
        self.out = nn.ModuleList(nn.Linear(8, 8, bias=False) for _ in range(blocks))

    def forward(self, ids):
        h = self.emb(ids)
        for b in range(len(self.k)):
            shifted = nn.functional.pad(h, (0, 0, 1, -1))
            k = self.k[b](h * self.mix[b] + shifted * (1 - self.mix[b]))
            wkv, state = torch.zeros_like(k), torch.zeros_like(k[:, 0])
            for t in range(k.shape[1]):
                wkv[:, t] = torch.tanh(k[:, t] + self.first[b] + state)
                state = state * torch.exp(-torch.exp(self.decay[b])) + k[:, t]
            h = h + self.out[b](wkv)
        return self.head(h)


def test_a_recurrence_written_step_by_step_keeps_every_tensor_of_its_branch():
    """What a step writes into a view of a buffer reaches the buffer's later readers (the
    ``out[:, t] = ...`` of RWKV's CPU kernel): before, the buffer held none of it, so the
    bonus and decay seemed to reach nothing and ``k`` was seen only through ``zeros_like(k)``.
    Every tensor of each branch — the twice-used mix, the bonus added at every step, the
    generic decay, the matrices — reads the branch's fork and its stream of 3 terms (the
    embedding and two branches); the embedding and the head, none."""
    model = TimeMix()
    with pytest.warns(hyperfree.optim.agd.KindsNote):
        opt = hyperfree.AGD(model, example=IDS)
    kinds = {i.name: str(i.kind) for i in opt._infos.values()}
    for b in range(2):
        assert kinds[f"mix.{b}"] == "gain(forks=1, terms=3)", kinds
        assert kinds[f"first.{b}"] == "bias(forks=1, terms=3)", kinds
        assert kinds[f"decay.{b}"] == "generic(forks=1, terms=3)", kinds
        assert kinds[f"k.{b}.weight"] == kinds[f"out.{b}.weight"] == "linear(forks=1, terms=3)"
    assert (kinds["emb.weight"], kinds["head.weight"]) == ("embedding", "linear")



@pytest.mark.parametrize("build", [TimeMix, lambda: SharedBias(), lambda: CrossBranches(2)],
                         ids=["time-mix", "shared-bias", "cross-branches"])
def test_read_kinds_reports_what_agd_applies(build):
    """``read_kinds`` (the reading alone) and ``AGD(model)`` (the table, then the reading) run
    one chain of refinements: on a model with no table gaps they give the same kind for every
    tensor, a generic tensor's forks included (``read_kinds`` once showed the decay as plain
    generic while AGD stepped it with its branch's fork)."""
    torch.manual_seed(0)
    model = build()
    example = IDS if not isinstance(model, CrossBranches) else X
    read = {n: str(k or "generic") for n, (k, _) in read_kinds(model, example).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = hyperfree.AGD(model, example=example)
    applied = {i.name: str(i.kind) for i in opt._infos.values()}
    assert read == applied
    if isinstance(model, TimeMix):
        assert read["decay.0"] == "generic(forks=1, terms=3)"

def test_a_write_into_a_view_joins_the_base_in_the_graph():
    """``Paths`` on its own: ``base[:, 0] = w·x`` gives ``base`` the lineage of ``w`` and makes
    the write a parent of what reads ``base`` next, so ``w`` reaches the output through it."""
    w = nn.Parameter(torch.ones(3))
    paths = Paths({id(w): 0})

    class Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            paths.trace(func.overloadpacket.__name__, list(args), out)
            return out

    with Trace():
        base = torch.zeros(2, 4, 3)
        base[:, 0] = w * 2.0
        y = base.sum()
    assert paths.lineage(base) == paths.lineage(y) == frozenset({0})
    after = _post_dominators(paths._children)
    assert len(after) >= 3 and None not in after  # every node reaches the last (the sum)


def test_the_time_mix_steps_equal_the_reference_twin_in_float64():
    """The kinds read above (used-many-times and generic tensors with a stream) step as the
    reference twin does, in float64."""
    torch.manual_seed(0)
    model = TimeMix().double()
    twin = copy.deepcopy(model)
    with pytest.warns(hyperfree.optim.agd.KindsNote):
        fast = hyperfree.AGD(model, example=IDS)
    with pytest.warns(hyperfree.optim.agd.KindsNote):
        ref = ReferenceAGD(twin, example=IDS)
    assert str(fast._infos[id(model.decay[0])].kind) == "generic(forks=1, terms=3)"
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        ids = torch.randint(0, 10, (4, 6), generator=gen)
        for m, opt in ((model, fast), (twin, ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(m(ids).flatten(0, 1), ids.flatten()).backward()
            opt.step()
        assert float(fast.eta) == pytest.approx(float(ref.eta), rel=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
