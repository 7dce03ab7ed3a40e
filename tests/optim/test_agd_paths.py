"""The fast AGD path equals its obviously correct twin in float64, on awkward shapes too.

Covers 2-D weights, 3x3 / 1x1 / 5x3 kernels, channel products that are not powers of two (the
blocked reduction's fallback), zero slices, and the sync-free (device-gated) mode.
"""
from __future__ import annotations

import pytest
import torch

from hyperfree.optim._functional import (_multi_tensor_agd, _single_tensor_agd, slice_sq_norms,
                                         target_scale)

SHAPES = [(7, 5), (64, 32), (3, 5, 3, 3), (16, 8, 3, 3), (4, 6, 1, 1), (6, 3, 5, 3), (256, 128, 3, 3)]
# (256, 128, 3, 3) is large enough for the blocked CPU reduction to run in several chunks


def _data(seed):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, dtype=torch.float64, generator=gen) for s in SHAPES]
    grads = [torch.randn(s, dtype=torch.float64, generator=gen) for s in SHAPES]
    grads[2][:, :, 1, 1] = 0.0  # a zero slice
    grads[0].zero_()  # a zero matrix
    return params, grads


@pytest.mark.parametrize("gated", [False, True])
def test_fast_path_matches_reference_float64(gated):
    p1, grads = _data(0)
    p2 = [p.clone() for p in p1]
    scales = [target_scale(p.shape) for p in p1]
    gains = [1.0, 2.0, 1.0, 0.5, 1.0, 1.0, 1.0]
    L = len(p1) + 2
    eta1, t1 = _single_tensor_agd(p1, grads, scales, L, gains, lambda G: True)
    eta2, t2 = _multi_tensor_agd(p2, grads, scales, L, gains, None if gated else (lambda G: True))
    torch.testing.assert_close(eta1, eta2, rtol=1e-13, atol=0)
    torch.testing.assert_close(t1, t2, rtol=1e-13, atol=0)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_zero_slices_unchanged_and_no_nan():
    params, grads = _data(1)
    before = [p.clone() for p in params]
    scales = [target_scale(p.shape) for p in params]
    _multi_tensor_agd(params, grads, scales, len(params), [1.0] * len(params), lambda G: True)
    assert torch.equal(params[0], before[0])
    assert torch.equal(params[2][:, :, 1, 1], before[2][:, :, 1, 1])
    assert not torch.equal(params[2][:, :, 0, 0], before[2][:, :, 0, 0])
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("shape", SHAPES)
def test_slice_sq_norms(shape):
    g = torch.randn(shape, dtype=torch.float64)
    want = (g.norm() ** 2).reshape(1) if g.dim() == 2 else (g ** 2).sum(dim=(0, 1)).flatten()
    torch.testing.assert_close(slice_sq_norms(g).reshape(want.shape), want, rtol=1e-12, atol=0)


def test_gated_mode_is_a_noop_on_nonfinite():
    params, grads = _data(2)
    grads[3][0, 0, 0, 0] = float("inf")
    grads[5][1, 1, 1, 1] = float("nan")
    before = [p.clone() for p in params]
    scales = [target_scale(p.shape) for p in params]
    eta, terms = _multi_tensor_agd(params, grads, scales, 7, [1.0] * 7, None)
    assert float(eta) == 0.0
    sizes = [1 if len(s) == 2 else s[2] * s[3] for s in SHAPES]
    per_tensor = [bool(torch.isfinite(t).all()) for t in terms.split(sizes)]
    assert per_tensor == [True, True, True, False, True, False, True]
    for a, b in zip(params, before):
        assert torch.equal(a, b)
