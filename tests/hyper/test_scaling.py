"""Loss scaling with towers: ``step(S·loss, scale=S)`` and ``step(scaler.scale(loss), scaler=…)``.

* A loss scaled by 65536 (a number or a tensor) gives the unscaled run's trajectory exactly
  (float64; a power-of-two scale is undone exactly), on fused and reference paths, 2 and 3
  levels: weights, hyperparameters and optimiser state.
* A dynamic ``torch.amp.GradScaler`` whose scale grows during the run, and backs off at a bad
  batch, gives the same trajectory as the unscaled run that skips the same batch.
* float16 overflow under ``torch.autocast``: the overflowing steps are skipped silently, the
  scaler backs off, nothing changes, and the run then equals one started at the settled scale.
* Gradients that autograd returns as views of one shared value are unscaled once each.
* Bad ``scale``/``scaler`` arguments raise a ValueError naming the value.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_scaling.py``
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper

F64 = torch.float64


def _batches(n: int, dtype: torch.dtype = F64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(32, 8, generator=gen, dtype=dtype),
             torch.randint(0, 3, (32,), generator=gen)) for _ in range(n)]


def _net(text: str, dtype: torch.dtype = F64, **kwargs) -> hyper.HyperModule:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)
    return hyper.HyperModule(model, hyper.parse(text), **kwargs)


def _snapshot(net: hyper.HyperModule) -> list[torch.Tensor]:
    out = [p.detach().clone() for p in net.model.parameters()]
    for level in net._levels:
        out.append(level.raw.detach().clone())
        for v in level.state.values():
            out += [x.clone() for x in v] if isinstance(v, list) else [v.clone()]
    return out


def _assert_same(a: hyper.HyperModule, b: hyper.HyperModule) -> None:
    assert a.hyperparameters() == b.hyperparameters()
    for x, y in zip(_snapshot(a), _snapshot(b), strict=True):
        assert torch.equal(x, y)


STACKS = ["sgd(0.05)/sgd(1e-3)", "adam(1e-2)/sgd(1e-5)", "sgd(0.05, 0.9)/adam(1e-3)/sgd(1e-4)",
          "rmsprop(0.01)/adamlr(1e-3)"]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("text", STACKS)
def test_static_scale_gives_the_unscaled_trajectory(text: str, fused: bool) -> None:
    plain, scaled, tensor = (_net(text, fused=fused) for _ in range(3))
    for x, y in _batches(8):
        plain.step(F.cross_entropy(plain(x), y))
        scaled.step(F.cross_entropy(scaled(x), y) * 65536, scale=65536)
        tensor.step(F.cross_entropy(tensor(x), y) * 65536, scale=torch.tensor(65536.0))
    assert plain.hyperparameters()[0]["lr"] not in (0.05, 0.01)  # the tower really moved
    _assert_same(scaled, plain)
    _assert_same(tensor, plain)


@pytest.mark.parametrize("text", STACKS[:2])
def test_dynamic_grad_scaler_gives_the_unscaled_trajectory(text: str) -> None:
    batches = _batches(10)
    bad = batches[4][0].clone()
    bad[0, 0] = float("nan")
    batches[4] = (bad, batches[4][1])
    plain, scaled = _net(text), _net(text)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    scales = []
    with pytest.warns(hyper.NonFiniteStepWarning):  # the NaN batch, in both runs
        for x, y in batches:
            plain.step(F.cross_entropy(plain(x), y))
            scaled.step(scaler.scale(F.cross_entropy(scaled(x), y)), scaler=scaler)
            scaler.update()
            scales.append(scaler.get_scale())
    assert scales[3] == 2.0 ** 12 and scales[4] == 2.0 ** 11  # grew, then backed off at NaN
    assert scaled.skipped_steps == plain.skipped_steps == 1
    _assert_same(scaled, plain)


def test_float16_overflow_is_skipped_silently_and_changes_nothing() -> None:
    text, batches = "adam(1e-2)/sgd(1e-5)", _batches(12, torch.float32)

    def run(init_scale: float, data: list) -> tuple[hyper.HyperModule, torch.amp.GradScaler]:
        net = _net(text, torch.float32)
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        for x, y in data:
            before = _snapshot(net)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(net(x), y)
            net.step(scaler.scale(loss), scaler=scaler)
            scaler.update()
            if net.last_step_skipped:
                for a, b in zip(_snapshot(net), before, strict=True):
                    assert torch.equal(a, b)
        return net, scaler

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an expected overflow is not worth a warning
        net, scaler = run(2.0 ** 24, batches)
    skips = net.skipped_steps
    assert 3 <= skips < 12 and scaler.get_scale() == 2.0 ** (24 - skips)
    assert net.hyperparameters()[0]["lr"] != 1e-2
    settled, _ = run(2.0 ** (24 - skips), batches[skips:])  # the skipped steps left no trace
    assert settled.skipped_steps == 0
    _assert_same(net, settled)


class _SumOfWeights(nn.Module):
    """Output ``a.sum() + b.sum()``: autograd returns both gradients as expanded views of one
    shared ``1`` (entries that share memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(3, dtype=F64))
        self.b = nn.Parameter(torch.zeros(2, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a.sum() + self.b.sum() + 0 * x.sum()


def test_gradients_that_share_memory_are_unscaled_once() -> None:
    net = hyper.HyperModule(_SumOfWeights(), hyper.parse("sgd(0.1)"))
    x = torch.ones(1, dtype=F64)
    for _ in range(2):
        net.step(net(x) * 4, scale=4)
    assert torch.equal(net.model.a, torch.full((3,), -0.2, dtype=F64))
    assert torch.equal(net.model.b, torch.full((2,), -0.2, dtype=F64))


def test_bad_scale_arguments_name_the_value() -> None:
    net = _net("sgd(0.05)/sgd(1e-3)")
    x, y = _batches(1)[0]
    for bad in (0, -2.0, float("inf"), float("nan"), "65536"):
        with pytest.raises(ValueError, match="scale must be"):
            net.step(F.cross_entropy(net(x), y), scale=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        net.step(F.cross_entropy(net(x), y), scale=2.0,
                 scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="GradScaler, got float"):
        net.step(F.cross_entropy(net(x), y), scaler=2.0)  # type: ignore[arg-type]
