"""Shared pieces of the ecosystem tests: a tiny model with every common kind, data, steps."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import hyperfree


def tiny_net(seed: int = 0) -> nn.Module:
    """Linear with bias, LayerNorm (gain + bias), a bias-free head: four parameter kinds."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(),
                         nn.Linear(16, 3, bias=False))


def batch(i: int) -> tuple[Tensor, Tensor]:
    """The ``i``-th fixed regression batch."""
    gen = torch.Generator().manual_seed(1000 + i)
    return torch.randn(12, 6, generator=gen), torch.randn(12, 3, generator=gen)


def loss_of(model: nn.Module, i: int) -> Tensor:
    x, y = batch(i)
    return ((model(x) - y) ** 2).mean()


def backward(model: nn.Module, opt: torch.optim.Optimizer, i: int) -> Tensor:
    """Zero the gradients and back-propagate batch ``i``; returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss = loss_of(model, i)
    loss.backward()
    return loss.detach()


def agd(model: nn.Module, preset: str = "paper") -> hyperfree.AGD:
    """AGD on ``model`` with its weights initialised by AGD's rule."""
    opt = hyperfree.AGD(model, preset=preset)
    opt.init_weights()
    return opt


def flat(model: nn.Module) -> Tensor:
    """Every parameter of ``model`` in one float64 vector (a copy)."""
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
