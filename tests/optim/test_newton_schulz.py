"""``hyperfree.optim.newton_schulz``: the orthogonalisation against the SVD, in float64.

The iteration maps every singular value through a fixed scalar polynomial and keeps the singular
vectors, so its float64 output must equal ``U f(Σ/‖G‖_F) Vᵀ`` built from ``torch.linalg.svd``
with ``f`` the composition of the schedule's quintics, evaluated on scalars (a twin that shares
no matrix arithmetic with the iteration). Also: how close each schedule comes to the exact
polar factor ``U Vᵀ`` (bounds a broken iteration would fail), zero matrices stay zero, tall =
transposed wide, a batch = its matrices one by one = its CPU chunks, dtypes round-trip, and
``batched_dot``.
Run: ``pytest tests/optim/test_newton_schulz.py``.
"""
from __future__ import annotations

import math

import pytest
import torch

from hyperfree.optim import newton_schulz
from hyperfree.optim.newton_schulz import (NS4_SCHEDULE, NS_COEFFICIENTS, NS_STEPS,
                                           POLAR_EXPRESS, batched_dot, ns_dtype, orthogonalize)

#: name -> (coefficients passed, steps, schedule as the scalar twin reads it)
SCHEDULES = {
    "jordan-5": (None, NS_STEPS, (NS_COEFFICIENTS,)),
    "polar-express-5": (POLAR_EXPRESS, 5, POLAR_EXPRESS),
    "ns4": (NS4_SCHEDULE, 4, NS4_SCHEDULE),
}


def _haar(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _matrix(rows: int, cols: int, sigma: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``U diag(sigma) Vᵀ`` with Haar U, V: a ``rows × cols`` matrix of known spectrum."""
    k = min(rows, cols)
    U, V = _haar(rows, gen)[:, :k], _haar(cols, gen)[:, :k]
    return (U * sigma) @ V.T


def _stack(n: int, rows: int, cols: int, lo: float, seed: int = 0) -> torch.Tensor:
    """n matrices whose singular values are 1, lo and log-uniform between, × a random scale."""
    gen = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    mats = []
    for _ in range(n):
        u = torch.rand(k, generator=gen, dtype=torch.float64)
        u[0], u[-1] = 0.0, 1.0
        sigma = lo ** u
        scale = 10 ** (4 * torch.rand((), generator=gen, dtype=torch.float64) - 2)
        mats.append(_matrix(rows, cols, sigma * scale, gen))
    return torch.stack(mats)


def _scalar(x: torch.Tensor, schedule, steps: int) -> torch.Tensor:
    for k in range(steps):
        a, b, c = schedule[min(k, len(schedule) - 1)]
        x = a * x + b * x ** 3 + c * x ** 5
    return x


def _twin(G: torch.Tensor, schedule, steps: int) -> torch.Tensor:
    """``U f(Σ/‖G‖_F) Vᵀ`` from the SVD (float64)."""
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    fro = torch.linalg.vector_norm(G, dim=(-2, -1), keepdim=True).squeeze(-1)
    return (U * _scalar(S / fro, schedule, steps).unsqueeze(-2)) @ Vh


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 12, 20), (2, 20, 12)])
def test_float64_equals_the_svd_twin(name, shape):
    coefficients, steps, schedule = SCHEDULES[name]
    G = _stack(*shape, lo=1e-3)
    D = orthogonalize(G, steps=steps, coefficients=coefficients)
    assert D.dtype == torch.float64
    torch.testing.assert_close(D, _twin(G, schedule, steps), rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 7), (2, 9, 1), (5, 1, 1)])
def test_a_rank_one_matrix_gets_its_exact_polar_factor(dtype, shape):
    """One row or one column: ``U Vᵀ`` (the SVD's) exactly, where 5 steps of the quintic
    would leave the one singular value at 0.70; a 1 × 1 matrix gets its sign."""
    G = _stack(*shape, lo=1e-3).to(dtype)
    G[-1] *= -1
    D = orthogonalize(G)
    assert D.dtype == dtype
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    tol = 1e-12 if dtype == torch.float64 else 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(D.double(), U @ Vh, rtol=0, atol=tol)
    torch.testing.assert_close(torch.linalg.vector_norm(D.double(), dim=(-2, -1)),
                               torch.ones(shape[0], dtype=torch.float64), rtol=0, atol=tol)
    if shape[1:] == (1, 1):
        assert torch.equal(D, torch.sign(G))
    Z = torch.zeros_like(G)
    assert torch.equal(orthogonalize(Z), Z)


JORDAN_LO = 1e-2  # σ_min/σ_max of the test matrices: σ_min/‖G‖_F ≈ 4e-3, in Jordan's range


@pytest.mark.parametrize("name, lo, band, polar, nuc", [
    # σ_min/‖G‖_F is 4.3e-3 (lo 1e-2) and 2.2e-3 (lo 5e-3): inside each schedule's designed
    # range, so every gain lies in its documented band (module docstring)
    ("jordan-5", JORDAN_LO, (0.68, 1.21), 0.33, 0.16),
    ("polar-express-5", 5e-3, (0.84, 1.13), 0.14, 0.05),
    ("ns4", 5e-3, (0.65, 1.33), 0.34, 0.18),
])
def test_close_to_the_exact_polar_factor(name, lo, band, polar, nuc):
    coefficients, steps, _ = SCHEDULES[name]
    G = _stack(4, 24, 40, lo=lo, seed=1)
    D = orthogonalize(G, steps=steps, coefficients=coefficients)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    gains = torch.linalg.svdvals(D)  # D = U f(Σ) Vᵀ: its singular values are the gains
    assert band[0] <= gains.min() and gains.max() <= band[1]
    assert torch.linalg.matrix_norm(D - U @ Vh, ord=2).max() <= polar
    estimate = batched_dot(G, D, torch.float64) / S.sum(-1)  # ⟨G, D⟩ / ‖G‖_*
    assert ((estimate - 1).abs() <= nuc).all(), estimate


def test_a_broken_iteration_fails_the_bounds():
    """The bounds above catch a missing step or the classic cubic iteration (slow start)."""
    G = _stack(4, 24, 40, lo=JORDAN_LO, seed=1)
    for broken, steps in [(None, NS_STEPS - 1), (((1.5, -0.5, 0.0),), NS_STEPS)]:
        gains = torch.linalg.svdvals(orthogonalize(G, steps=steps, coefficients=broken))
        assert not (0.68 <= gains.min() and gains.max() <= 1.21), gains.min()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_zero_matrices_stay_zero(dtype):
    G = _stack(3, 8, 5, lo=1e-2).to(dtype)
    G[1] = 0
    D = orthogonalize(G)
    assert torch.equal(D[1], torch.zeros_like(D[1]))
    assert torch.isfinite(D).all()
    torch.testing.assert_close(D[[0, 2]], orthogonalize(G[[0, 2]]), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_tall_is_the_transposed_wide(name):
    coefficients, steps, _ = SCHEDULES[name]
    G = _stack(2, 10, 30, lo=1e-2)
    tall = orthogonalize(G.mT, steps=steps, coefficients=coefficients)
    torch.testing.assert_close(tall, orthogonalize(G, steps=steps, coefficients=coefficients).mT,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_a_batch_equals_its_matrices_one_by_one(dtype, atol):
    G = _stack(5, 12, 17, lo=1e-2).to(dtype)
    one_by_one = torch.cat([orthogonalize(G[i:i + 1]) for i in range(len(G))])
    torch.testing.assert_close(orthogonalize(G), one_by_one, rtol=0, atol=atol)


@pytest.mark.parametrize("chunk_bytes", [2 * 12 * 17 * 8, 1])  # pairs; one matrix at a time
def test_cpu_chunks_compute_the_same_products(monkeypatch, chunk_bytes):
    G = _stack(5, 17, 12, lo=1e-2)  # tall: chunks of the transposed stack
    whole = orthogonalize(G)
    monkeypatch.setattr(newton_schulz, "CPU_CHUNK_BYTES", chunk_bytes)
    torch.testing.assert_close(orthogonalize(G), whole, rtol=0, atol=1e-13)
    torch.testing.assert_close(orthogonalize(G), _twin(G, (NS_COEFFICIENTS,), NS_STEPS),
                               rtol=0, atol=1e-10)
    G32 = G.float()
    monkeypatch.setattr(newton_schulz, "CPU_CHUNK_BYTES", 1 << 20)
    whole32 = orthogonalize(G32)
    monkeypatch.setattr(newton_schulz, "CPU_CHUNK_BYTES", chunk_bytes // 4)  # bfloat16 bytes
    torch.testing.assert_close(orthogonalize(G32), whole32, rtol=0, atol=1e-6)


def test_dtypes_round_trip():
    G64 = _stack(2, 16, 24, lo=1e-2)
    assert ns_dtype(torch.float64) == torch.float64
    assert ns_dtype(torch.float32) == ns_dtype(torch.bfloat16) == torch.bfloat16
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        G = G64.to(dtype)
        before = G.clone()
        D = orthogonalize(G)
        assert D.dtype == dtype and D.shape == G.shape
        assert torch.equal(G, before)  # the input is not normalised in place
        # bfloat16 iteration, rounded back: the float64 answer within bfloat16 noise
        err = torch.linalg.matrix_norm(D.double() - orthogonalize(G64)) / math.sqrt(16)
        assert err.max() < 0.05, err
    D32 = orthogonalize(G64.float(), dtype=torch.float32)
    assert D32.dtype == torch.float32
    torch.testing.assert_close(D32.double(), orthogonalize(G64), rtol=0, atol=1e-4)
    G = G64.float()
    assert torch.equal(orthogonalize(G, dtype=torch.float32), orthogonalize(G, dtype=torch.float32))


def test_argument_errors_name_the_value():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        orthogonalize(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="triples"):
        orthogonalize(torch.zeros(1, 4, 4), coefficients=[])
    with pytest.raises(ValueError, match="triples"):
        orthogonalize(torch.zeros(1, 4, 4), coefficients=[(1.0, 2.0)])


def test_schedules_keep_their_designed_ranges():
    """The documented scalar ranges (module docstring) of each schedule, on a dense grid."""
    x = torch.cat([torch.logspace(-3, 0, 20001, dtype=torch.float64),
                   torch.linspace(1e-3, 1, 200001, dtype=torch.float64)])
    for name, lo, (low, high) in [("jordan-5", 3e-3, (0.68, 1.21)),
                                  ("polar-express-5", 1e-3, (0.84, 1.13)),
                                  ("ns4", 2e-3, (0.65, 1.33))]:
        _, steps, schedule = SCHEDULES[name]
        y = _scalar(x[x >= lo], schedule, steps)
        assert low <= y.min() and y.max() <= high, (name, y.min(), y.max())


def test_batched_dot_is_the_frobenius_inner_product():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, 9, generator=gen, dtype=torch.float64)
    b = torch.randn(4, 6, 9, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(batched_dot(a, b, torch.float64), (a * b).sum((1, 2)),
                               rtol=1e-12, atol=1e-12)
    assert batched_dot(a.float(), b.bfloat16(), torch.float64).dtype == torch.float64
