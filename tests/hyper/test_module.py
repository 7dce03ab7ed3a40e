"""``HyperModule`` bookkeeping: resume, bad input, real-world modules, memory and errors.

* ``state_dict``/``load_state_dict`` (through ``torch.save``/``torch.load(weights_only=True)``)
  resumes a run bit-for-bit like the uninterrupted one, and a state saved with ``fused=True``
  continues with ``fused=False`` (and back) on the same trajectory.
* A non-finite loss skips the step with a warning and changes nothing; the run then continues
  exactly as if the bad batch had never been seen.
* BatchNorm buffers, tied parameters and train/eval behave as with the bare model, and the
  user's module keeps its own ``nn.Parameter`` objects (never re-parametrised).
* Hyperparameters pushed out of range are clamped / reparametrised into range.
* 2,000 steps: resident memory and the autograd graph kept between steps stay flat; no warnings.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_module.py``
"""
from __future__ import annotations

import gc
import io
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper


def _data(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen))
            for _ in range(n)]


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _run(net: hyper.HyperModule, batches: list) -> None:
    for x, y in batches:
        net.step(F.cross_entropy(net(x), y))


def _snapshot(net: hyper.HyperModule) -> list[torch.Tensor]:
    out = [p.detach().clone() for p in net.model.parameters()]
    for level in net._levels:
        out.append(level.raw.detach().clone())
        for v in level.state.values():
            out += [x.clone() for x in v] if isinstance(v, list) else [v.clone()]
    return out


STACKS = ["sgd(0.05)/sgd(1e-3)", "adam(1e-2)/sgd(1e-5)", "sgd(0.05, 0.9)/adam(1e-3)/sgd(1e-4)",
          "rmsprop(0.01)/adamlr(1e-3)"]


@pytest.mark.parametrize("text", STACKS)
def test_resume_equals_uninterrupted_run(text: str) -> None:
    batches = _data(10)
    full = hyper.HyperModule(_net(), hyper.parse(text))
    _run(full, batches)
    first = hyper.HyperModule(_net(), hyper.parse(text))
    _run(first, batches[:5])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = hyper.HyperModule(_net(seed=1), hyper.parse(text))  # different init: all restored
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _run(resumed, batches[5:])
    assert resumed.hyperparameters() == full.hyperparameters()
    for a, b in zip(_snapshot(resumed), _snapshot(full)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("saved_fused", [True, False])
@pytest.mark.parametrize("text", ["adam(1e-2)/sgd(1e-5)", "sgd(0.05)/sgd(1e-3)",
                                  "sgdperparam(0.05)/sgd(1e-3)", "adamlr(1e-2)/adam(1e-4)"])
def test_state_loads_across_fused_settings(text: str, saved_fused: bool) -> None:
    """A state saved with fused=True continues with fused=False (and back) on the same
    trajectory (float64; the two paths agree to rounding)."""
    batches = [(x.double(), y) for x, y in _data(10)]
    full = hyper.HyperModule(_net().double(), hyper.parse(text), fused=saved_fused)
    _run(full, batches)
    first = hyper.HyperModule(_net().double(), hyper.parse(text), fused=saved_fused)
    _run(first, batches[:5])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    other = hyper.HyperModule(_net(seed=1).double(), hyper.parse(text), fused=not saved_fused)
    assert bool(other._tower.fast_path()) != bool(first._tower.fast_path())
    other.load_state_dict(torch.load(buffer, weights_only=True))
    _run(other, batches[5:])
    for a, b in zip(other.hyperparameters(), full.hyperparameters(), strict=True):
        assert a == pytest.approx(b, rel=1e-10)
    for p, q in zip(other.model.parameters(), full.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("text", STACKS)
def test_non_finite_loss_skips_step_and_changes_nothing(text: str) -> None:
    batches = _data(8)
    clean = hyper.HyperModule(_net(), hyper.parse(text))
    _run(clean, batches)
    net = hyper.HyperModule(_net(), hyper.parse(text))
    _run(net, batches[:4])
    before = _snapshot(net)
    bad_x = batches[4][0].clone()
    bad_x[0, 0] = float("nan")
    with pytest.warns(hyper.NonFiniteStepWarning, match="skipped"):
        net.step(F.cross_entropy(net(bad_x), batches[4][1]))
    for a, b in zip(_snapshot(net), before):
        assert torch.equal(a, b)
    _run(net, batches[4:])
    for a, b in zip(_snapshot(net), _snapshot(clean)):
        assert torch.equal(a, b)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(8, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)
        self.head2 = self.head  # the same module twice: one set of parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.shared(torch.relu(self.shared(x)))))
        return self.head(h) + self.head2(h)


def test_batchnorm_tied_parameters_train_eval() -> None:
    torch.manual_seed(0)
    model = _Tied()
    params_before = {n: p for n, p in model.named_parameters()}
    values_before = {n: p.detach().clone() for n, p in params_before.items()}
    net = hyper.HyperModule(model, hyper.parse("sgd(0.1)/sgd(1e-3)"))
    _run(net, _data(3))
    after = dict(model.named_parameters())  # same Parameter objects: never swapped
    assert after.keys() == params_before.keys()
    assert all(after[n] is p for n, p in params_before.items())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert not torch.equal(model.shared.weight, values_before["shared.weight"])
    assert model.head.weight is model.head2.weight
    assert model.norm.num_batches_tracked == 3 and model.norm.running_mean.abs().sum() > 0
    x = _data(1, seed=5)[0][0]
    net.eval()
    running = model.norm.running_mean.clone()
    with torch.no_grad():
        out = net(x)
    assert not model.training and torch.equal(model.norm.running_mean, running)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    net.train()
    assert model.training and model.norm.training


def test_out_of_range_hyperparameters_are_kept_in_range() -> None:
    # a step size far too large makes successive gradients anti-aligned: α is pushed below 0
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    net = hyper.HyperModule(model, hyper.parse("sgd(5.0)/sgd(100.0)"))
    for _ in range(2):
        net.step(F.mse_loss(net(x), y))
    assert net.hyperparameters()[0]["lr"] == 0.0  # clamped (projected) at 0, not negative
    net.step(F.mse_loss(net(x), y))
    assert net.hyperparameters()[0]["lr"] > 0.0  # and it can recover
    adam = hyper.HyperModule(_net(), hyper.parse("adam(0.5)/sgd(1e3)"))
    _run(adam, _data(6))
    values = adam.hyperparameters()[0]
    assert values["beta1"] != 0.9 and values["beta2"] != 0.999
    assert 0 <= values["lr"] and 0 < values["beta1"] < 1 and 0 < values["beta2"] < 1


@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _graph_nodes(tensors: list[torch.Tensor]) -> int:
    seen, todo = set(), [t.grad_fn for t in tensors if t.grad_fn is not None]
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        todo += [nxt for nxt, _ in fn.next_functions]
    return len(seen)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("text", ["sgd(0.01, 0.9)/sgd(1e-4)/sgd(1e-6)", "adam(1e-3)/sgd(1e-5)"])
def test_memory_flat_over_2000_steps(text: str, one_thread: None) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))  # 19k weights
    net = hyper.HyperModule(model, hyper.parse(text))
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. create_graph reference-cycle warnings
        for step in range(2000):
            net.step(F.cross_entropy(net(x), y))
            if step == 199:
                gc.collect()
                live = net._tower.live + [lv.raw for lv in net._levels]
                rss, nodes = _rss_mib(), _graph_nodes(live)
    gc.collect()
    # one leaked weight copy per step would be 1800 × 77 kB ≈ 140 MiB
    assert _rss_mib() - rss < 20
    assert _graph_nodes(net._tower.live + [lv.raw for lv in net._levels]) == nodes > 0
    assert gc.collect() == 0  # no reference cycles created by the steps


def test_user_errors() -> None:
    model = _net()
    stack = hyper.parse("sgd/sgd")
    net = hyper.HyperModule(model, stack)
    x, y = _data(1)[0]
    net.step(F.cross_entropy(net(x), y))  # from now on the weights are live tensors
    with pytest.raises(ValueError, match="not with the wrapped model"):
        net.step(F.cross_entropy(model(x), y))
    with pytest.raises(ValueError, match="already used"):
        hyper.HyperModule(_net(), stack)
    with pytest.raises(ValueError, match="same stack"):
        hyper.HyperModule(_net(), hyper.parse("sgd/adam")).load_state_dict(net.state_dict())
    with pytest.raises(ValueError, match="scalar loss"):
        with torch.no_grad():
            net.step(F.cross_entropy(net(x), y))
    with pytest.raises(ValueError, match="optimiser"):
        hyper.HyperModule(_net(), "sgd/sgd")  # type: ignore[arg-type]
