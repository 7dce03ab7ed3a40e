"""Forks: a tensor on one side of a sum of forked activations (a residual branch, a shortcut)
gets a larger step scale under the default preset (``Kind.forks``; ``docs/agd-stability.md``
§10).

What the forward's reading counts (and what it must not: a bias, a position table, a mask, a
recurrent or tied weight), the race's own models, the scale in the plan (the default only; the
paper preset stays the paper's), the fast step against its reference twin with forks, and the
forks through ``state_dict`` and declarations.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.models._registry import create_model
from hyperfree.optim import DEFAULT_PRESET, PRESETS, Kind
from hyperfree.optim.infer import read_kinds

from .reference import ReferenceAGD


class Residual(nn.Module):
    """x -> stem -> h + branch(h) [+ inner residual inside the branch] -> head."""

    def __init__(self, nested: bool = False, shortcut: bool = False) -> None:
        super().__init__()
        self.stem, self.a, self.b, self.head = (nn.Linear(4, 8), nn.Linear(8, 8),
                                                nn.Linear(8, 8), nn.Linear(8, 3))
        self.inner = nn.Linear(8, 8) if nested else None
        self.shortcut = nn.Linear(8, 8, bias=False) if shortcut else None

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        u = torch.tanh(self.a(h))
        if self.inner is not None:
            u = u + torch.tanh(self.inner(u))
        skip = h if self.shortcut is None else self.shortcut(h)
        return self.head(skip + torch.tanh(self.b(u)))


def _forks(model: nn.Module, example) -> dict[str, int]:
    return {n: k.forks for n, (k, _) in read_kinds(model, example).items()}


X = torch.randn(5, 4)


def test_a_residual_branch_forks_once_and_nothing_else_does():
    got = _forks(Residual(), X)
    assert got == {"stem.weight": 0, "stem.bias": 0, "a.weight": 1, "a.bias": 1,
                   "b.weight": 1, "b.bias": 1, "head.weight": 0, "head.bias": 0}


def test_a_residual_inside_a_branch_forks_twice():
    got = _forks(Residual(nested=True), X)
    assert got["inner.weight"] == 2 and got["a.weight"] == 1 and got["b.weight"] == 1
    assert got["stem.weight"] == got["head.weight"] == 0


def test_a_shortcut_and_the_branch_beside_it_both_fork():
    got = _forks(Residual(shortcut=True), X)
    assert got["shortcut.weight"] == 1 and got["a.weight"] == 1 and got["b.weight"] == 1
    assert got["stem.weight"] == 0


class PackedBranch(nn.Module):
    """A residual branch whose first layer is a packed projection, read as 3 blocks from the
    split of its output: GPT-2's ``c_attn`` (weight and bias) in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.qkv, self.out = nn.Linear(4, 8), nn.Linear(8, 24), nn.Linear(8, 8)

    def forward(self, x):
        h = self.stem(x)
        q, k, v = self.qkv(h).split(8, dim=-1)
        return h + self.out(torch.tanh(q) * torch.sigmoid(k) + v)


def test_a_packed_bias_keeps_the_fork_of_its_branch():
    """AGD packs a table bias as its output is split, after counting its forks: the packing
    rebuilt the bias's kind from its name and lost the fork its weight keeps."""
    opt = hyperfree.AGD(PackedBranch(), example=X)
    group = opt.param_groups[0]
    kinds = {n: Kind(*k) for n, k in zip(group["param_names"], group["kinds"])}
    assert kinds["qkv.weight"] == Kind("linear", blocks=3, forks=1)
    assert kinds["qkv.bias"] == Kind("bias", blocks=3, forks=1)
    assert kinds["out.bias"] == Kind("bias", forks=1) and kinds["stem.bias"] == Kind("bias")


class NotForks(nn.Module):
    """Sums that are not forks: a bias added by hand, a position table, an attention mask."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4) / 2)
        self.b = nn.Parameter(torch.zeros(8))
        self.tok, self.pos = nn.Embedding(10, 8), nn.Embedding(6, 8)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        scores = x @ x.transpose(1, 2) + torch.triu(torch.full((6, 6), -1e9), 1)
        y = (scores.softmax(-1) @ x)[..., :4] @ self.w.T
        return y + self.b


def test_a_bias_a_position_table_and_a_mask_are_not_forks():
    assert set(_forks(NotForks(), torch.randint(0, 10, (2, 6))).values()) == {0}


class RecurrentResidual(nn.Module):
    """h <- h + tanh(U h + W x_t) over T steps, and a head tied to the embedding: every
    weight is used more than once, so its paths are not one and it gets no fork."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.W, self.U = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)

    def forward(self, ids):
        xs = self.emb(ids)
        h = torch.zeros(ids.shape[0], 8)
        for t in range(ids.shape[1]):
            h = h + torch.tanh(self.U(h) + self.W(xs[:, t]))
        return h @ self.emb.weight.T


class RawResidual(nn.Module):
    """The stream straight from a Linear, summed with a branch that ends in a Linear (and, with
    ``shortcut``, a projection of it): two raw products added, but forked from a common input."""

    def __init__(self, shortcut: bool = False) -> None:
        super().__init__()
        self.stem, self.a, self.b, self.head = (nn.Linear(4, 8), nn.Linear(8, 8),
                                                nn.Linear(8, 8), nn.Linear(8, 3))
        self.shortcut = nn.Linear(8, 8, bias=False) if shortcut else None

    def forward(self, x):
        h = self.stem(x)
        skip = h if self.shortcut is None else self.shortcut(h)
        return self.head(torch.tanh(skip + self.b(torch.tanh(self.a(h)))))


class Cell(nn.Module):
    """A recurrent cell unrolled by hand: ``W_ih x_t + W_hh h`` is one pre-activation."""

    def __init__(self) -> None:
        super().__init__()
        self.ih, self.hh, self.head = nn.Linear(4, 8), nn.Linear(8, 8, bias=False), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.zeros(x.shape[1], 8)
        for t in range(x.shape[0]):
            h = torch.tanh(self.ih(x[t]) + self.hh(h))
        return self.head(h)


@pytest.mark.parametrize("shortcut", [False, True])
def test_two_raw_products_forked_from_one_input_are_a_join_not_one_layer(shortcut):
    got = {n: k for n, (k, _) in read_kinds(RawResidual(shortcut), X).items()}
    assert {n: (k.share, k.forks) for n, k in got.items() if n.endswith("weight")} == {
        "stem.weight": (1, 0), "a.weight": (1, 1), "b.weight": (1, 1), "head.weight": (1, 0),
        **({"shortcut.weight": (1, 1)} if shortcut else {})}
    cell = {n: k for n, (k, _) in read_kinds(Cell(), torch.randn(3, 5, 4)).items()}
    assert (cell["ih.weight"].share, cell["hh.weight"].share, cell["head.weight"].share) \
        == (2, 2, 1)


def test_weights_used_more_than_once_do_not_fork():
    assert set(_forks(RecurrentResidual(), torch.randint(0, 10, (2, 5))).values()) == {0}


def _race_model(name: str, **flags):
    torch.manual_seed(0)
    image = name in ("resnet_small", "fcn")
    model = create_model(name, in_channels=1, num_classes=10 if image else 65, image_size=16,
                         **flags)
    return model, (torch.randn(2, 1, 16, 16) if image else torch.randint(0, 65, (2, 16)))


def test_the_race_models_fork_where_their_residuals_are():
    got = _forks(*_race_model("resnet_small", depth=1, width=8))
    forked = {n for n, f in got.items() if f}
    assert forked == {f"stages.{s}.0.{c}.weight" for s in range(3) for c in ("conv1", "conv2")} \
        | {"stages.1.0.shortcut.weight", "stages.2.0.shortcut.weight"}
    assert max(got.values()) == 1
    got = _forks(*_race_model("gpt", depth=2, width=16, heads=2, seq_len=16))
    assert {n for n, f in got.items() if f} == {n for n in got if n.startswith("blocks.")}
    for name, flags in (("char_lstm", dict(depth=2, width=16, seq_len=16)),
                        ("fcn", dict(depth=3, width=16))):
        assert set(_forks(*_race_model(name, **flags)).values()) == {0}, name


def _kinds(opt: hyperfree.AGD) -> dict[str, Kind]:
    """Every parameter's kind as the optimiser's groups hold it, by name."""
    return {n: Kind(*k) for g in opt.param_groups for n, k in zip(g["param_names"], g["kinds"])}


def _trained_kinds(model: nn.Module, preset) -> tuple[hyperfree.AGD, dict[str, Kind]]:
    opt = hyperfree.AGD(model, preset=preset)
    _steps(model, opt, 1)
    return opt, _kinds(opt)


def _steps(model: nn.Module, opt: hyperfree.AGD, n: int, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    etas = []
    for _ in range(n):
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        y = torch.randn(16, 3, generator=g, dtype=torch.float64)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        etas.append(float(opt.eta))
    return etas


@pytest.mark.parametrize("preset", [DEFAULT_PRESET, "paper", "spectral-momentum"])
def test_the_default_scales_sigma_by_its_forks_and_no_other_preset_does(preset):
    torch.manual_seed(0)
    model = Residual(nested=True).double()
    opt, kinds = _trained_kinds(model, preset)
    assert kinds["inner.weight"].forks == 2 and kinds["a.weight"].forks == 1
    plan = next(iter(opt._plans.values()))[0]
    scale = {n: plan.sigma[j] / kinds[n].rule.sigma(tuple(p.shape), kinds[n])
             for j, (_, n, p, _) in enumerate(opt._entries())}
    uses = PRESETS[preset].forks
    assert uses == (preset == DEFAULT_PRESET)
    for n, k in kinds.items():
        assert scale[n] == pytest.approx(math.sqrt(2) ** k.forks if uses else 1.0, rel=1e-12), n


def test_the_forked_default_equals_its_reference_twin_in_float64():
    torch.manual_seed(0)
    model = Residual(nested=True, shortcut=True).double()
    twin = copy.deepcopy(model)
    fast, ref = hyperfree.AGD(model), ReferenceAGD(twin)
    e1, e2 = _steps(model, fast, 6), _steps(twin, ref, 6)
    assert any(k.forks for k in _kinds(fast).values())
    assert e1 == pytest.approx(e2, rel=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_the_forks_make_the_step_longer_than_without_them():
    torch.manual_seed(0)
    model = Residual().double()
    twin = copy.deepcopy(model)
    flat = dataclasses.replace(PRESETS[DEFAULT_PRESET], name="flat", forks=False,
                               streams=False)
    before = copy.deepcopy(model)
    _steps(model, hyperfree.AGD(model), 1)
    _steps(twin, hyperfree.AGD(twin, preset=flat), 1)
    moved = {n: (p - q).norm() for (n, p), q in zip(model.named_parameters(), before.parameters())}
    flat_moved = {n: (p - q).norm() for (n, p), q in zip(twin.named_parameters(),
                                                         before.parameters())}
    # the forked tensors' σ is √2 larger, and η grows with G, which their σ enters
    assert 2 * flat_moved["a.weight"] > moved["a.weight"] > math.sqrt(2) * flat_moved["a.weight"]
    assert 1.5 * flat_moved["stem.weight"] > moved["stem.weight"] > flat_moved["stem.weight"]


def test_the_forks_travel_in_the_state_dict_and_resume_exactly():
    torch.manual_seed(0)
    model = Residual().double()
    opt = hyperfree.AGD(model)
    _steps(model, opt, 2)
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    model2 = Residual().double()
    model2.load_state_dict(weights)
    opt2 = hyperfree.AGD(model2)  # its first forward is not read yet: the saved forks load
    opt2.load_state_dict(saved)
    assert [g["kinds"] for g in opt2.param_groups] == [g["kinds"] for g in opt.param_groups]
    assert _steps(model2, opt2, 3, seed=1) == _steps(model, opt, 3, seed=1)
    for p, q in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_declared_fork_is_kept_and_a_bad_one_is_refused():
    torch.manual_seed(0)
    model = Residual().double()
    opt = hyperfree.AGD(model, kinds={"stem.weight": Kind("linear", forks=3)})
    _steps(model, opt, 1)
    kinds = _kinds(opt)
    assert kinds["stem.weight"].forks == 3 and kinds["a.weight"].forks == 1
    assert str(kinds["stem.weight"]) == "linear(forks=3)"
    with pytest.raises(ValueError, match="Kind forks must be an integer >= 0, got -1"):
        Kind("linear", forks=-1)
