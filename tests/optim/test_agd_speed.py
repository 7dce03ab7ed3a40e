"""The fast step's own machinery (``hyperfree.optim._plan``, ``_kernels``, ``_xp``) is exact.

* Host and device finishes: the eager-CPU path finishes the step on the host (numpy views,
  ``_xp.HOST``), accelerators and ``torch.compile`` with 0-dim tensors; forced onto
  the same CPU model (:class:`tests.optim.conftest.Zoo`, every kind, float64) for EVERY preset
  they take the same six steps (η to 1e-12, weights to 1e-10).
* The device guard skips a non-finite step without a host sync and without touching weights or
  momentum, and counts it.
* Conv cells (the ``Pattern`` units: column sums of an (M, P) view, streamed through a
  cache-sized accumulator in several chunks on CPU, updated through a tiled coefficient row)
  equal the reference twin for contiguous and channels_last weights, also when the layout
  changes after the optimiser was built or the gradient's layout differs from the weight's.
* The CPU proxy for launch counts: a step of the paper preset issues the same number of
  computing aten ops for 12 and 48 tensors (profiler).
Run: ``pytest tests/optim/test_agd_speed.py``.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import PRESETS

from .conftest import Zoo, zoo_loss
from .reference import ReferenceAGD

CL = torch.channels_last


def _zoo_pair(preset: str):
    torch.manual_seed(0)
    model = Zoo().double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model)
    host, device = hyperfree.AGD(model, preset=preset), hyperfree.AGD(twin, preset=preset)
    host._host, device._host = True, False
    return model, host, twin, device


@pytest.mark.parametrize("preset", list(PRESETS))
def test_host_and_device_guards_take_the_same_steps(preset):
    model, host, twin, device = _zoo_pair(preset)
    for t in range(6):
        for m, o in ((model, host), (twin, device)):
            o.zero_grad()
            zoo_loss(m, seed=t).backward()
            o.step()
        assert math.isclose(float(host.eta), float(device.eta), rel_tol=1e-12), t
    # η agrees to 1e-12 (above); the weights to 1e-10: the two finishes round the last bit of
    # a coefficient differently (numpy vs torch sums), and the Zoo's BatchNorm1d on a batch of
    # two amplifies that to ~2e-11 over six steps of the spectral preset
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
        a, b = host.state[p].get("momentum_buffer"), device.state[q].get("momentum_buffer")
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("preset", ["paper", "spectral-sphere"])
def test_device_guard_skips_nonfinite_step_without_touching_state(preset):
    _, _, twin, opt = _zoo_pair(preset)
    opt.zero_grad()
    zoo_loss(twin).backward()
    opt.step()  # a clean step first: momentum buffers now hold something
    before = copy.deepcopy(({n: p for n, p in twin.named_parameters()},
                            opt.state_dict()["state"]))
    opt.zero_grad()
    zoo_loss(twin, seed=1).backward()
    twin.lin.weight.grad[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        opt.step()
        assert opt.skipped_steps == 1
    assert float(opt.eta) == 0.0
    for k, v in twin.named_parameters():
        assert torch.equal(v, before[0][k]), k
    for k, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            assert torch.equal(v, before[1][k][key]), (k, key)


def _convnet(big: int = 96) -> nn.Module:
    """Convs big enough that the CPU column sums take several accumulator chunks."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, big, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(big, big, 3, padding=1, bias=False), nn.Tanh(),
                         nn.Conv2d(big, 8, 3, groups=2), nn.Flatten(), nn.LazyLinear(4)).double()


def _grads(model: nn.Module, layout=None) -> None:
    model.zero_grad()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if layout is not None:
        x = x.contiguous(memory_format=layout)
    model(x).square().mean().backward()


@pytest.mark.parametrize("preset", ["paper", "spectral-sphere"])
@pytest.mark.parametrize("case", ["contiguous", "channels_last", "layout_changed",
                                  "grad_layout_differs"])
def test_conv_cells_equal_reference(preset, case):
    ref = _convnet()
    _grads(ref)  # materialise the lazy head
    fast = copy.deepcopy(ref)
    if case == "channels_last":
        fast = fast.to(memory_format=CL)
    opt_fast = hyperfree.AGD(fast, preset=preset)
    opt_ref = ReferenceAGD(ref, preset=preset)
    if case == "layout_changed":  # the plan saw contiguous weights
        fast = fast.to(memory_format=CL)
    for t in range(3):
        _grads(ref)
        for p, q in zip(ref.parameters(), fast.parameters()):
            g = p.grad.clone()
            if case == "grad_layout_differs" and g.dim() == 4:
                g = g.contiguous(memory_format=CL)
            q.grad = g
        opt_ref.step()
        opt_fast.step()
        assert math.isclose(float(opt_fast.eta), float(opt_ref.eta), rel_tol=1e-10), t
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12,
                                   msg=lambda m, n=name: f"{n}: {m}")
    if case in ("channels_last", "layout_changed"):
        assert fast[2].weight.is_contiguous(memory_format=CL)


def _compute_ops(model: nn.Module, preset: str) -> int:
    from torch.profiler import ProfilerActivity, profile

    opt = hyperfree.AGD(model, preset=preset)
    model(torch.randn(2, 4, 8)).square().mean().backward()
    opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.step()
    root = next(e for e in prof.events() if e.name.startswith("Optimizer.step#"))
    views = ("view", "narrow", "slice", "as_strided", "unflatten", "permute", "reshape",
             "select", "unbind", "split", "split_with_sizes", "transpose", "unsqueeze", "t")
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is not None
               and e.cpu_parent.id == root.id and e.name[6:] not in views)


def _blocks(n: int) -> nn.Module:
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            h = self.ln(x)
            return x + self.fc(self.attn(h, h, h, need_weights=False)[0])

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), *[Block() for _ in range(n)])


def test_paper_step_compute_op_count_does_not_grow_with_tensors():
    small, large = _blocks(1), _blocks(5)  # 10 and 42 tensors: gains, biases, packed QKV, ...
    assert _compute_ops(small, "paper") == _compute_ops(large, "paper")
