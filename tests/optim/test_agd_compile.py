"""``torch.compile(opt.step)`` captures AGD's step in ONE graph and never recompiles.

On a tiny MLP with LayerNorm (Linear weights and biases, a gain; the spectral preset adds
Newton–Schulz, sign directions, momentum and retraction), compiled with the default (Inductor,
C++ on CPU) backend:

* one unique graph and at most one graph break (``torch.optim.Adam`` on torch 2.13 shows one,
  made by its own step wrapper) over 4 steps, so nothing recompiles from step to step (η, the
  coefficients and the counters are tensors);
* the compiled trajectory equals the eager one (float64, so that Newton–Schulz runs in float64:
  in bfloat16 Inductor's fused ``baddbmm`` rounds differently from eager, ~0.5% in η);
* a learning-rate schedule held in a tensor ``lr`` (torch's advice: the scheduler then
  ``fill_``s it) changes the step without a recompile.
Run: ``pytest tests/optim/test_agd_compile.py`` (about 15 s, mostly compilation).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch._dynamo.utils import counters

import hyperfree

# torch's own compile stack uses torch.jit.script_method internally on this version
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _loss(model: nn.Module, t: int) -> torch.Tensor:
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(t), dtype=model[0].weight.dtype)
    return model(x).square().mean()


@pytest.mark.parametrize("preset", ["paper", "spectral-sphere", "spectral-fresh", "spectral-head"])
def test_compiled_step_is_one_graph_without_recompiles_and_matches_eager(preset):
    dynamo.reset()
    counters.clear()
    model = _mlp(torch.float64)
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model)
    opt, eager = hyperfree.AGD(model, preset=preset), hyperfree.AGD(twin, preset=preset)
    step = torch.compile(opt.step)
    for t in range(4):
        for m, o, fn in ((model, opt, step), (twin, eager, eager.step)):
            o.zero_grad()
            _loss(m, t).backward()
            fn()
        torch.testing.assert_close(opt.eta, eager.eta, rtol=1e-10, atol=1e-12)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert sum(counters["graph_break"].values()) <= 1, dict(counters["graph_break"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12,
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert opt.steps == 4 and opt.skipped_steps == 0


def test_tensor_lr_schedule_does_not_recompile():
    dynamo.reset()
    counters.clear()
    model = _mlp()
    opt = hyperfree.AGD(model, lr=torch.tensor(1.0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    step = torch.compile(opt.step)
    moves = []
    for t in range(4):
        before = model[0].weight.detach().clone()
        opt.zero_grad()
        _loss(model, 0).backward()
        step()
        sched.step()
        moves.append(float((model[0].weight.detach() - before).norm()))
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert moves[1] < 0.75 * moves[0] and moves[3] < 0.75 * moves[2]  # the schedule acts
