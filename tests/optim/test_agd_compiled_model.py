"""A model compiled after ``AGD(model)`` is still read (its forks and unknown kinds), and a
forward AGD could not read before its first step is said, not passed over.

``torch.compile(model)`` returns a wrapper whose own hooks run eagerly before dynamo: AGD reads
one side-effect-free eager forward of the original model on the same arguments there
(``_resolve.Resolution._read_compiled``). ``model.compile()`` compiles the call itself, hooks
included, so nothing eager runs: the first step then warns that the forward was not read and
names ``example=``. The ``eager`` dynamo backend traces exactly as Inductor does (the hooks see
``is_compiling()``) without a C++ build, so these tests take seconds.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import re
import warnings

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn

import hyperfree

# torch's own compile stack warns about global module hooks (AGD's reader) and jit internals
pytestmark = [pytest.mark.filterwarnings("ignore:Using `torch.compile\\(module\\)`"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")]


class Net(nn.Module):
    """A residual branch (forks) and a free gain vector (a kind only the forward tells)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b, self.head = (nn.Linear(6, 8), nn.Linear(8, 8),
                                                nn.Linear(8, 8), nn.Linear(8, 3))
        self.g = nn.Parameter(torch.ones(8))

    def forward(self, x, scale: float = 1.0):
        h = torch.tanh(self.stem(x))
        h = h + torch.tanh(self.b(torch.tanh(self.a(h))))
        return self.head(h * self.g) * scale


def _kinds(opt: hyperfree.AGD) -> dict[str, str]:
    lines = opt.kinds_report().split("\n\n")[0].splitlines()[1:]
    cols = [re.split(r"\s{2,}", line) for line in lines]  # parameter, shape, kind, from, why
    return {c[0].removeprefix("_orig_mod."): c[2] for c in cols}


def _train(model: nn.Module, opt: hyperfree.AGD, call, steps: int = 3) -> list[float]:
    etas = []
    for t in range(steps):
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        opt.zero_grad()
        call(x).square().mean().backward()
        opt.step()
        etas.append(float(opt.eta))
    return etas


@contextlib.contextmanager
def _unsaid():
    """Fails if AGD warns that it could not read the forward."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        yield
    assert not [w for w in said if "could not read" in str(w.message)]


def _flush_watchers() -> None:
    """Watchers of models gone by now (other tests') unhook at the next forward of anything."""
    gc.collect()
    nn.Identity()(torch.zeros(1))


def _pair():
    _flush_watchers()
    torch.manual_seed(0)
    model = Net().double()
    return model, copy.deepcopy(model)


EAGER = {"stem.weight": "linear", "stem.bias": "bias", "a.weight": "linear(forks=1)",
         "a.bias": "bias(forks=1)", "b.weight": "linear(forks=1)", "b.bias": "bias(forks=1)",
         "head.weight": "linear", "head.bias": "bias", "g": "gain"}


@pytest.mark.parametrize("compile_first", [False, True])
def test_a_model_compiled_around_agd_reads_and_steps_as_the_eager_one(compile_first):
    dynamo.reset()
    model, twin = _pair()
    if compile_first:  # AGD(torch.compile(model)): the wrapper is the model AGD watches
        compiled = torch.compile(model, backend="eager")
        opt = hyperfree.AGD(compiled)
    else:  # AGD(model), then torch.compile(model): the wrapper's eager hook reads it
        opt = hyperfree.AGD(model)
        compiled = torch.compile(model, backend="eager")
    eager = hyperfree.AGD(twin)
    with _unsaid():
        etas = _train(model, opt, compiled)
    assert _kinds(opt) == EAGER
    assert etas == pytest.approx(_train(twin, eager, twin), rel=1e-12)
    assert _kinds(eager) == EAGER
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_a_forward_compiled_in_place_is_not_read_and_the_first_step_says_so():
    dynamo.reset()
    model, twin = _pair()
    opt = hyperfree.AGD(model)
    model.compile(backend="eager")
    with pytest.warns(UserWarning, match=r"could not read the model's forward before its first "
                      r"step \(it ran compiled.*example=batch"):
        _train(model, opt, model, steps=1)
    kinds = _kinds(opt)
    assert kinds["g"] == "generic" and kinds["a.weight"] == "linear"  # no fork counted
    assert "generic: the model's forward was not read" in opt.kinds_report()
    with _unsaid():  # said once: the watch is closed
        _train(model, opt, model, steps=2)
    x = torch.randn(5, 6, dtype=torch.float64)
    read = hyperfree.AGD(twin, example=x)  # the remedy the warning names
    twin.compile(backend="eager")
    with _unsaid():
        _train(twin, read, twin, steps=1)
    assert _kinds(read) == EAGER


def test_keyword_only_calls_of_a_compiled_wrapper_are_said_too():
    dynamo.reset()
    model, _ = _pair()
    opt = hyperfree.AGD(model)
    compiled = torch.compile(model, backend="eager")
    with pytest.warns(UserWarning, match="could not read the model's forward"):
        _train(model, opt, lambda x: compiled(x=x), steps=1)
    assert _kinds(opt)["g"] == "generic"


def test_gradients_set_by_hand_before_any_forward_step_silently_and_report_why():
    model, _ = _pair()
    opt = hyperfree.AGD(model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with _unsaid():
        opt.step()
    assert _kinds(opt)["g"] == "generic" and _kinds(opt)["a.weight"] == "linear"
    assert "generic: the model's forward was not read before the first step" \
        in opt.kinds_report()
    with _unsaid():  # a later forward is no longer read: the kinds of a stepped run are fixed
        _train(model, opt, model, steps=1)
    assert _kinds(opt)["g"] == "generic"


def test_a_watcher_whose_model_or_optimiser_is_gone_unhooks_itself():
    from torch.nn.modules import module as _module
    _flush_watchers()
    before = len(_module._global_forward_pre_hooks)
    model = Net()
    opt = hyperfree.AGD(model)  # no example: it watches for the first forward
    assert len(_module._global_forward_pre_hooks) == before + 1
    del opt  # the optimiser is gone before any forward: its watch ends at the next forward
    nn.Identity()(torch.zeros(1))
    assert len(_module._global_forward_pre_hooks) == before
    hyperfree.AGD(model)
    del model
    _flush_watchers()
    assert len(_module._global_forward_pre_hooks) == before
