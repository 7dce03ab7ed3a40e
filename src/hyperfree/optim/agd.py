"""Automatic Gradient Descent — placeholder being replaced by the full implementation."""
from __future__ import annotations

import math

import torch
from torch import nn


def target_scale(shape: torch.Size) -> float:
    if len(shape) == 2:
        return math.sqrt(shape[0] / shape[1])
    if len(shape) == 4:
        return math.sqrt(shape[0] / shape[1]) / math.sqrt(shape[2] * shape[3])
    raise ValueError(f"unsupported shape {tuple(shape)}")


def agd_update(*args, **kwargs):
    raise NotImplementedError


class AGD(torch.optim.Optimizer):
    def __init__(self, params, *, gain: float = 1.0):
        if isinstance(params, nn.Module):
            params = params.parameters()
        super().__init__(list(params), dict(gain=gain))

    @torch.no_grad()
    def init_weights(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 2:
                    nn.init.orthogonal_(p)
                    p.mul_(target_scale(p.shape))
                else:
                    for i in range(p.shape[2]):
                        for j in range(p.shape[3]):
                            nn.init.orthogonal_(p[:, :, i, j])
                    p.mul_(target_scale(p.shape))

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        L = len(params)
        G = 0.0
        for p in params:
            if p.grad is None:
                continue
            n = p.grad.norm() if p.dim() == 2 else p.grad.norm(dim=(0, 1)).sum()
            G = G + target_scale(p.shape) * n
        G = torch.as_tensor(G) / L
        eta = torch.log(0.5 * (1 + torch.sqrt(1 + 4 * G)))
        for p in params:
            if p.grad is None:
                continue
            n = p.grad.norm() if p.dim() == 2 else p.grad.norm(dim=(0, 1))
            p.sub_(self.param_groups[0]["gain"] * eta / L * target_scale(p.shape) * p.grad / n)
        return eta
