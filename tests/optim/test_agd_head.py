"""The head's step from its input's measured scale (preset ``spectral-head``, ``preset.head``;
``hyperfree/optim/_head.py``, docs/agd-stability.md §25):

    ρ² = mean of x² over the head's inputs x on the step's forwards (gradients enabled)
    W_head ← W_head − gain · lr · (η/L) · σ · D · clamp(1/ρ, 1, L)   (every other tensor, G and
                                                                      η as without)

Checked: which layers are heads (the last to make each returned shape, a plain untied linear
matrix; through a mapping output; none for a tied or transformed output), ρ against the input
computed by hand (two forwards accumulated, a no-grad forward ignored; 1/ρ within [1, L]), one
step against the same preset without ``head`` (every other tensor equal, the head's move × 1/ρ),
the fast path against the reference twin in float64, resuming from a ``state_dict``, a model
copied or pickled with its optimiser, and the first forward's reading of the kinds.
Run: ``pytest tests/optim/test_agd_head.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS

from .reference import make_agd

HEAD = "spectral-head"
WITHOUT = dataclasses.replace(PRESETS[HEAD], name="without-head", head=False)


class Net(nn.Module):
    """Linear → tanh → Linear, its output as a tensor or in a mapping with a loss."""

    def __init__(self, mapping: bool = False) -> None:
        super().__init__()
        self.body, self.out = nn.Linear(6, 8), nn.Linear(8, 5)
        self.mapping = mapping

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return 1.5 * torch.tanh(self.body(x))  # ρ ≈ 0.7: 1/ρ under the cap L = 2

    def forward(self, x: torch.Tensor):
        y = self.out(self.hidden(x))
        return {"loss": y.square().mean(), "logits": y} if self.mapping else y


class TwoHeads(Net):
    """A policy head and a value head on one body: both are heads."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor):
        h = self.hidden(x)
        return self.out(h), self.value(h)


class Tied(nn.Module):
    """An embedding whose matrix is also the output layer's."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.out = nn.Embedding(5, 8), nn.Linear(8, 5, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(ids)))


class Summed(Net):
    """The head's output reduced before it is returned: no module makes the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).sum(-1)


def _x(t: int) -> torch.Tensor:
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(t), dtype=torch.float64)


def _net(cls=Net, **kw) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kw).double()


def _loss(model: nn.Module, t: int) -> torch.Tensor:
    out = model(_x(t))
    out = out["logits"] if isinstance(out, dict) else out
    return sum(o.sin().sum() for o in (out if isinstance(out, tuple) else (out,)))


def _train(model: nn.Module, opt: hyperfree.AGD, steps: int, start: int = 0) -> list[float]:
    etas = []
    for t in range(start, start + steps):
        opt.zero_grad()
        _loss(model, t).backward()
        opt.step()
        etas.append(float(opt.eta))
    return etas


def _rms(model: Net, *ts: int) -> float:
    with torch.no_grad():
        return float(torch.stack([model.hidden(_x(t)).square().mean() for t in ts]).mean().sqrt())


def _heads(opt: hyperfree.AGD, model: nn.Module) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(h.param)] for h in opt._head.heads]


@pytest.mark.parametrize("mapping", [False, True])
def test_the_head_is_the_layer_that_makes_the_output_and_rho_its_input_rms(mapping):
    model = _net(mapping=mapping)
    opt = hyperfree.AGD(model, preset=HEAD)
    assert opt._head.factors(opt.L) == []  # no forward yet
    model(_x(0))
    assert _heads(opt, model) == ["out.weight"]
    with torch.no_grad():
        model(_x(5))  # an evaluation: not counted
    model(_x(1))  # a second forward of the same step (gradient accumulation)
    [(w, f)] = opt._head.factors(opt.L)
    assert w is model.out.weight
    assert float(f) == pytest.approx(1 / _rms(model, 0, 1), rel=1e-12)
    [(_, f)] = opt._head.factors(opt.L)  # counted once: the next step measures its own forwards
    assert float(f) == 1.0


class Residual(Net):
    """A residual branch before the head: its tensors have forks, read from the first forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        h = super().hidden(x)
        return h + self.fc2(torch.tanh(self.fc1(h)))


def test_the_first_forward_is_read_alike_with_the_heads_hooks():
    kinds = []
    for preset in (HEAD, WITHOUT):
        model = _net(Residual)
        opt = hyperfree.AGD(model, preset=preset)  # no example: the first forward is read
        _train(model, opt, 1)
        kinds.append({i.name: i.kind for i in opt._infos.values()})
    assert kinds[0] == kinds[1] and kinds[0]["fc1.weight"].forks == 1


class Quiet(Net):
    """A head whose input is near zero (a state that starts at zero)."""

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return 1e-6 * super().hidden(x)


class Loud(Net):
    """A head whose input is above the bound's RMS 1 (a final norm's gain grown)."""

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * super().hidden(x)


def test_the_heads_factor_stays_within_one_and_the_whole_budget():
    for cls, rho, factor in ((Quiet, lambda r: r < 1e-5, 2.0), (Loud, lambda r: r > 5, 1.0)):
        model = _net(cls)
        opt = hyperfree.AGD(model, preset=HEAD)
        model(_x(0))
        [(_, f)] = opt._head.factors(opt.L)
        assert rho(_rms(model, 0)) and opt.L == 2 and float(f) == factor, cls.__name__


def test_every_returned_tensor_has_its_head():
    model = _net(TwoHeads)
    opt = hyperfree.AGD(model, preset=HEAD)
    model(_x(0))
    assert sorted(_heads(opt, model)) == ["out.weight", "value.weight"]


@pytest.mark.parametrize("cls, found", [(TwoHeads, "out.weight, value.weight"),
                                        (Summed, "none (no plain, untied linear weight"),
                                        (Tied, "none (no plain, untied linear weight")])
def test_the_kinds_report_names_the_heads(cls, found):
    """Between the table and the code to paste: not found before the first forward (where a
    candidate exists), then the heads by name, or none; no line under a preset without it."""
    model = _net(cls)
    opt = hyperfree.AGD(model, preset=HEAD)
    before = opt.kinds_report().split("\n\n")
    assert before[1].startswith("heads (step x clamp(1/rho, 1, L)")
    assert ("not found yet" in before[1]) == (cls is not Tied)  # a tied weight: no candidate
    model(torch.randint(0, 5, (4, 3)) if cls is Tied else _x(0))
    table, line = opt.kinds_report().split("\n\n")[:2]
    assert table.splitlines()[0].split() == ["parameter", "shape", "kind", "from", "why"]
    assert line.split("§25): ")[1].startswith(found)
    assert "heads" not in hyperfree.AGD(_net(cls), preset=WITHOUT).kinds_report()


def test_parameters_without_their_model_say_the_head_is_not_measured():
    """Bare tensors declared by kind: no forward to hook, so the report says so (with the
    remedy) and the step is the preset's without the head."""
    a, b = _net(), _net()
    kinds = lambda m: {m.body.weight: "linear", m.body.bias: "bias",  # noqa: E731
                       m.out.weight: "linear", m.out.bias: "bias"}
    bare = hyperfree.AGD(list(a.parameters()), preset=HEAD, kinds=kinds(a))
    plain = hyperfree.AGD(list(b.parameters()), preset=WITHOUT, kinds=kinds(b))
    line = bare.kinds_report().split("\n\n")[1]
    assert line.startswith("heads: not measured") and "AGD(params, model=model)" in line
    assert "heads" not in plain.kinds_report()
    for model, opt in ((a, bare), (b, plain)):
        for _ in range(3):
            opt.zero_grad()
            model(_x(0)).sin().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    with_model = hyperfree.AGD(list(a.parameters()), preset=HEAD, kinds=kinds(a), model=a)
    assert "not found yet" in with_model.kinds_report().split("\n\n")[1]


@pytest.mark.parametrize("cls", [Tied, Summed])
def test_no_head_steps_as_the_preset_without_it(cls):
    a, b = _net(cls), _net(cls)
    fast, plain = hyperfree.AGD(a, preset=HEAD), hyperfree.AGD(b, preset=WITHOUT)
    x = torch.randint(0, 5, (4, 3)) if cls is Tied else _x(0)
    for model, opt in ((a, fast), (b, plain)):
        for _ in range(3):
            opt.zero_grad()
            model(x).sin().sum().backward()
            opt.step()
    assert fast._head.heads == []
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_the_head_moves_its_share_over_rho_and_nothing_else_changes():
    a, b = _net(), _net()  # no retraction: the move is the step's alone
    fast = hyperfree.AGD(a, preset=dataclasses.replace(PRESETS[HEAD], retraction=None))
    plain = hyperfree.AGD(b, preset=dataclasses.replace(WITHOUT, retraction=None))
    before = copy.deepcopy(a.state_dict())
    rho = _rms(a, 0)
    assert abs(rho - 1) > 0.1  # the test can tell 1/ρ from 1
    _train(a, fast, 1)
    _train(b, plain, 1)
    assert torch.equal(fast.eta, plain.eta)
    for name, p in a.named_parameters():
        q = dict(b.named_parameters())[name]
        if name == "out.weight":
            torch.testing.assert_close(p - before[name], (q - before[name]) / rho,
                                       rtol=1e-12, atol=0)
        else:
            assert torch.equal(p, q), name


@pytest.mark.parametrize("cls", [Net, TwoHeads])
def test_fast_path_equals_the_reference_twin_in_float64(cls):
    a, b = _net(cls), _net(cls)
    fast, ref = make_agd(a, preset=HEAD), make_agd(b, preset=HEAD, path="reference")
    fast.init_weights(torch.Generator().manual_seed(1))
    ref.init_weights(torch.Generator().manual_seed(1))
    assert _train(a, fast, 6) == pytest.approx(_train(b, ref, 6), rel=1e-12)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)


def test_resuming_from_a_state_dict_equals_never_stopping():
    model = _net()
    opt = hyperfree.AGD(model, preset=HEAD)
    _train(model, opt, 3)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    straight = _train(model, opt, 3, 3)
    fresh = _net()
    opt2 = hyperfree.AGD(fresh, preset=HEAD)
    fresh.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    assert _train(fresh, opt2, 3, 3) == straight
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_model_copied_with_its_optimiser_keeps_its_head(how):
    model = _net()
    opt = hyperfree.AGD(model, preset=HEAD)
    model(_x(9))  # a forward not yet stepped: its input is part of an autograd graph
    pair = (model, opt)
    model2, opt2 = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert _heads(opt2, model2) == ["out.weight"]
    opt._head.factors(opt.L), opt2._head.factors(opt2.L)  # both drop the forward above
    assert _train(model2, opt2, 3) == _train(model, opt, 3)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
