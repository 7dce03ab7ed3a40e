"""Memory layout does not change AGD's step.

* A conv model (plain, grouped, transposed convs, BatchNorm) in ``channels_last`` takes the
  same steps as the contiguous model from the same gradients, and keeps its layout;
* non-contiguous gradients (a transposed matrix, a permuted kernel, a strided bias) give the
  same step as their contiguous copies;
* a non-contiguous multi-dimensional parameter of kind ``bias`` or ``gain`` (a ``(1, C, H, W)``
  positional bias declared with ``kinds=``, made non-contiguous by ``channels_last``) is
  updated, and by the same step as its contiguous twin.
Both code paths, both families (and retraction), float64. Run:
``pytest tests/optim/test_agd_layout.py``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hyperfree

from .reference import make_agd

CL = torch.channels_last
PATHS = pytest.mark.parametrize("path", ["fast", "reference"])


def _convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 6, 3, padding=1, groups=2),
                         nn.Tanh(), nn.ConvTranspose2d(6, 4, 2, groups=2), nn.BatchNorm2d(4)
                         ).double()


def _copy_grads(src: nn.Module, dst: nn.Module, layout=None) -> None:
    for p, q in zip(src.parameters(), dst.parameters()):
        g = p.grad.clone()
        q.grad = g.contiguous(memory_format=layout) if layout is not None and g.dim() == 4 else g


@PATHS
@pytest.mark.parametrize("preset", ["paper", "spectral", "spectral-sphere"])
def test_channels_last_conv_model_takes_the_same_steps(preset, path):
    model = _convnet()
    cl = copy.deepcopy(model).to(memory_format=CL)
    assert not cl[0].weight.is_contiguous() and cl[0].weight.is_contiguous(memory_format=CL)
    opt = make_agd(model, preset=preset, path=path)
    opt_cl = make_agd(cl, preset=preset, path=path)
    for t in range(2):
        torch.manual_seed(t)
        model.zero_grad()
        model(torch.randn(2, 3, 6, 6, dtype=torch.float64)).square().mean().backward()
        _copy_grads(model, cl, CL)
        assert not cl[0].weight.grad.is_contiguous()
        opt.step()
        opt_cl.step()
        torch.testing.assert_close(opt.eta, opt_cl.eta, rtol=1e-12, atol=0)
    for (name, p), q in zip(model.named_parameters(), cl.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14, msg=lambda m, n=name: f"{n}: {m}")
        if q.dim() == 4:
            assert q.is_contiguous(memory_format=CL), name


@PATHS
@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_non_contiguous_gradients_give_the_contiguous_step(preset, path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.ConvTranspose1d(3, 6, 2)).double()
    twin = copy.deepcopy(model)
    grads = {"0.weight": torch.randn(5, 3, dtype=torch.float64).T,
             "0.bias": torch.randn(6, dtype=torch.float64)[::2],
             "1.weight": torch.randn(2, 6, 3, dtype=torch.float64).permute(2, 1, 0),
             "1.bias": torch.randn(6, 2, dtype=torch.float64)[:, 0]}
    for name, p in model.named_parameters():
        assert not grads[name].is_contiguous() and grads[name].shape == p.shape
        p.grad = grads[name]
    for name, q in twin.named_parameters():
        q.grad = grads[name].contiguous()
    opt = make_agd(model, preset=preset, path=path)
    opt_twin = make_agd(twin, preset=preset, path=path)
    opt.step()
    opt_twin.step()
    torch.testing.assert_close(opt.eta, opt_twin.eta, rtol=1e-12, atol=0)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


class PosBias(nn.Module):
    """A learned ``(1, C, H, W)`` additive bias and per-position scale (declared by kinds=)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.pos = nn.Parameter(0.1 * torch.randn(1, 3, 4, 4))
        self.scale = nn.Parameter(1 + 0.1 * torch.randn(1, 3, 4, 4))

    def forward(self, x):
        return self.conv(x) * self.scale + self.pos


@PATHS
@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_non_contiguous_bias_and_gain_parameters_are_updated(preset, path):
    torch.manual_seed(0)
    model = PosBias().double()
    cl = copy.deepcopy(model).to(memory_format=CL)
    assert not cl.pos.is_contiguous() and not cl.scale.is_contiguous()
    kinds = {"pos": "bias", "scale": "gain"}
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    model(x).sin().sum().backward()
    _copy_grads(model, cl, CL)
    before = cl.pos.detach().clone(), cl.scale.detach().clone()
    opt = make_agd(model, preset=preset, path=path, kinds=kinds)
    opt_cl = make_agd(cl, preset=preset, path=path, kinds=kinds)
    opt.step()
    opt_cl.step()
    assert not torch.equal(cl.pos, before[0]) and not torch.equal(cl.scale, before[1])
    for (name, p), q in zip(model.named_parameters(), cl.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14, msg=lambda m, n=name: f"{n}: {m}")
