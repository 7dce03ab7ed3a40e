"""AGD's initialisation (SPEC §1.1): every matrix / kernel slice semi-orthogonal with all
singular values equal to s(W) (checked by SVD), and the draw is Haar-uniform (sign-fixed QR)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim.init import haar_semi_orthogonal, orthogonal_init_


@pytest.mark.parametrize("shape", [(32, 32), (64, 16), (16, 64), (8, 4, 3, 3), (4, 8, 3, 3),
                                   (6, 6, 1, 1), (5, 3, 2, 4)])
def test_singular_values_equal_target_scale(shape):
    torch.manual_seed(0)
    w = torch.empty(shape)
    d_out, d_in = shape[0], shape[1]
    k = 1 if len(shape) == 2 else shape[2] * shape[3]
    s = math.sqrt(d_out / d_in) / math.sqrt(k)
    orthogonal_init_(w, s)
    slices = [w] if w.dim() == 2 else [w[:, :, i, j] for i in range(shape[2]) for j in range(shape[3])]
    for sl in slices:
        sv = torch.linalg.svdvals(sl.double())
        assert sv.numel() == min(d_out, d_in)
        torch.testing.assert_close(sv, torch.full_like(sv, s), rtol=1e-5, atol=1e-6)
    if w.dim() == 4 and k > 1:  # the slices are independent draws
        assert not torch.allclose(slices[0], slices[1])


def test_init_weights_on_model_and_seeded():
    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Flatten(), nn.Linear(8, 4, bias=False))
    a, b = build(), build()
    hyperfree.AGD(a).init_weights(torch.Generator().manual_seed(7))
    hyperfree.AGD(b).init_weights(torch.Generator().manual_seed(7))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    sv = torch.linalg.svdvals(a[2].weight.detach())
    torch.testing.assert_close(sv, torch.full_like(sv, math.sqrt(4 / 8)), rtol=1e-5, atol=1e-6)


def test_haar_distribution_moments():
    # For Haar-uniform Q in O(n): E[Q_ij] = 0 and E[Q_ij^2] = 1/n. Without the sign fix the
    # diagonal of QR's Q is biased towards positive values; check the mean of the diagonal.
    gen = torch.Generator().manual_seed(3)
    q = haar_semi_orthogonal(4000, 4, 4, generator=gen)
    assert abs(float(q.mean())) < 0.02
    assert abs(float((q ** 2).mean()) - 0.25) < 0.01
    diag_mean = float(torch.diagonal(q, dim1=-2, dim2=-1).mean())
    assert abs(diag_mean) < 0.03, diag_mean
