"""The AGD update as pure functions: an obviously correct twin and a fast path.

Symbols (Bernstein et al., 2023, Algorithm 1; ``../shared/SPEC.md`` §1.1):

* ``L`` — the number of weight tensors in the network (a 4-D conv kernel counts once);
* ``s`` — the target singular value of a tensor, :func:`target_scale`;
* a *slice* — the whole matrix for a 2-D weight, one ``(c_out, c_in)`` kernel position for a
  4-D weight;
* ``G = (1/L) Σ_W s(W) Σ_slices ‖∇W_slice‖_F`` — the gradient summary;
* ``η = log((1 + sqrt(1 + 4G)) / 2)`` — the automatic learning rate;
* ``W ← W − gain · (η/L) · s(W) · ∇W_slice / ‖∇W_slice‖_F`` — the update (zero slices stay put).

Both paths first compute the *squared* Frobenius norm of every slice (:func:`slice_sq_norms`),
then the shared scalars (:func:`agd_coefficients`), then apply the update. The reference path
(``_single_tensor_agd``) uses ``norm(dim=(0, 1))`` and an out-of-place update; the fast path
(``_multi_tensor_agd``) uses a BLAS dot for matrices, a contiguous blocked reduction for conv
kernels (a strided per-slice ``norm(dim=(0, 1))`` is ~4.5x slower on CPU) and one in-place
``addcmul_`` per tensor. ``tests/optim/test_agd_paths.py`` proves them equal in float64.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["target_scale", "num_slices", "agd_eta", "agd_coefficients", "slice_sq_norms",
           "_single_tensor_agd", "_multi_tensor_agd", "_block"]


def target_scale(shape: Sequence[int]) -> float:
    """``s(W)``: ``sqrt(d_out/d_in)`` for 2-D, ``sqrt(c_out/c_in)/sqrt(k_x k_y)`` for 4-D."""
    if len(shape) == 2:
        return math.sqrt(shape[0] / shape[1])
    if len(shape) == 4:
        return math.sqrt(shape[0] / shape[1]) / math.sqrt(shape[2] * shape[3])
    raise ValueError(f"AGD target_scale: unsupported shape {tuple(shape)}; "
                     "expected 2-D (d_out, d_in) or 4-D (c_out, c_in, k_x, k_y)")


def num_slices(shape: Sequence[int]) -> int:
    """How many ``(d_out, d_in)`` slices a weight has: 1 for 2-D, ``k_x·k_y`` for 4-D."""
    return 1 if len(shape) == 2 else shape[2] * shape[3]


def agd_eta(G: Tensor) -> Tensor:
    """``η = log((1 + sqrt(1 + 4G)) / 2)``."""
    return torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)


def _block(t: Tensor) -> tuple[int, int]:
    """``(m, k)``: a 4-D tensor is viewed as ``(N/m, m·k)`` rows with ``k = k_x k_y``.

    ``m`` is the largest power of two ≤ 64 dividing ``N = c_out·c_in``, so each row holds ``m``
    whole kernel-position groups and column ``j`` belongs to slice ``j mod k``. Summing the
    rows is a contiguous reduction; folding the ``m·k`` column sums gives the ``k`` slice sums.
    """
    n = t.shape[0] * t.shape[1]
    m = 1
    while m < 64 and n % (2 * m) == 0:
        m *= 2
    return m, t.shape[2] * t.shape[3]


_CHUNK = 1 << 17  # elements of the CPU accumulator: it stays in cache while the rows stream by


def slice_sq_norms(g: Tensor) -> Tensor:
    """Squared Frobenius norm of every slice: shape ``(1,)`` for 2-D, ``(k_x·k_y,)`` for 4-D.

    On CPU a 4-D gradient viewed as rows of ``m·k`` values (:func:`_block`) is squared and
    summed into a cache-sized ``(rows, m·k)`` accumulator, block of rows by block of rows
    (``acc += x ⊙ x``, one fused pass, no full-size temporary), then folded to ``k`` sums.
    """
    if g.dim() == 2 or (g.dim() == 4 and g.shape[2] * g.shape[3] == 1):
        flat = g.reshape(-1)
        return torch.dot(flat, flat).reshape(1)
    m, k = _block(g)
    if g.device.type != "cpu":
        return torch.linalg.vector_norm(g.reshape(-1, k), dim=0).square()
    rows = g.reshape(-1, m * k)
    step = max(1, _CHUNK // (m * k))
    if rows.shape[0] <= step:
        return rows.square().sum(0).view(m, k).sum(0)
    acc = torch.zeros(step, m * k, dtype=g.dtype)
    for i in range(0, rows.shape[0], step):
        block = rows[i:i + step]
        acc[:block.shape[0]].addcmul_(block, block)
    return acc.sum(0).view(m, k).sum(0)


def _slice_vectors(shapes: Sequence[Sequence[int]], scales: Sequence[float], L: int,
                   gain: Sequence[float], device: torch.device, dtype: torch.dtype
                   ) -> tuple[Tensor, Tensor, list[int]]:
    """Per-slice ``s`` and ``−gain·s/L`` as vectors, and the number of slices per tensor."""
    sizes = [num_slices(sh) for sh in shapes]
    s_vec = [s for s, n in zip(scales, sizes) for _ in range(n)]
    c_vec = [-gn * s / L for s, gn, n in zip(scales, gain, sizes) for _ in range(n)]
    return (torch.tensor(s_vec, dtype=dtype, device=device),
            torch.tensor(c_vec, dtype=dtype, device=device), sizes)


_VECTORS: dict[tuple, tuple[Tensor, Tensor, list[int]]] = {}


def agd_coefficients(sq_norms: Sequence[Tensor], shapes: Sequence[Sequence[int]],
                     scales: Sequence[float], L: int, gain: Sequence[float]
                     ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """From the slices' squared norms, return ``(η, terms, coefficients)``.

    ``terms`` holds ``s(W)·‖∇W_slice‖`` for every slice, concatenated (``G = terms.sum()/L``; a
    non-finite term marks a non-finite gradient). ``coefficients[i]`` (one entry per slice of
    tensor ``i``) multiplies ``∇W_i``: ``−gain_i · (η/L) · s_i / ‖∇W_slice‖`` where the norm is
    positive, else 0. All of it is vectorised over slices and stays on the gradients' device.
    """
    sq = torch.cat([q.reshape(-1) for q in sq_norms])
    key = (tuple(map(tuple, shapes)), tuple(gain), L, sq.device, sq.dtype)
    if key not in _VECTORS:
        if len(_VECTORS) > 64:
            _VECTORS.clear()
        _VECTORS[key] = _slice_vectors(shapes, scales, L, gain, sq.device, sq.dtype)
    s_vec, c_vec, sizes = _VECTORS[key]
    norms = sq.sqrt()
    terms = s_vec * norms
    eta = agd_eta(terms.sum() / L)
    coeffs = torch.where(norms > 0, c_vec * eta / norms, 0.0)
    return eta, terms, list(coeffs.split(sizes))


ShouldApply = Callable[[float], bool]  # called with G's numerator Σ terms, on the host


def _single_tensor_agd(params: list[Tensor], grads: list[Tensor], scales: list[float], L: int,
                       gain: list[float], should_apply: ShouldApply) -> tuple[Tensor, Tensor]:
    """Reference twin: literal per-slice norms and updates. Returns ``(η, terms)``.

    The update is applied only if ``should_apply(float(terms.sum()))`` is true.
    """
    sq = [(g.norm() if g.dim() == 2 else g.norm(dim=(0, 1)).flatten()) ** 2 for g in grads]
    eta, terms, _ = agd_coefficients(sq, [g.shape for g in grads], scales, L, gain)
    if not should_apply(float(terms.sum())):
        return eta, terms
    for p, g, s, gn in zip(params, grads, scales, gain):
        n = g.norm() if g.dim() == 2 else g.norm(dim=(0, 1))[None, None]
        direction = torch.where(n > 0, g / n, torch.zeros_like(g))
        p.copy_(p - gn * (eta / L) * s * direction)
    return eta, terms


def _apply(p: Tensor, g: Tensor, c: Tensor) -> None:
    """``p += c ⊙ g`` with ``c`` one coefficient per slice, in place."""
    if c.numel() == 1:
        p.addcmul_(g, c)
        return
    m, k = _block(g)
    p.view(-1, m * k).addcmul_(g.reshape(-1, m * k), c.repeat(m).view(1, m * k))


def _multi_tensor_agd(params: list[Tensor], grads: list[Tensor], scales: list[float], L: int,
                      gain: list[float], should_apply: ShouldApply | None
                      ) -> tuple[Tensor, Tensor]:
    """Fast path: one reduction pass and one in-place update pass. Returns ``(η, terms)``.

    ``should_apply(Σ terms)`` decides on the host whether to update. ``None`` is the sync-free
    mode for accelerators: a non-finite gradient turns the step into a no-op on the device
    (η and every coefficient become 0 and gradient entries are read through
    ``where(finite, g, 0)``), so no host round trip is needed to skip it.
    """
    sq = [slice_sq_norms(g) for g in grads]
    if should_apply is not None and grads[0].device.type == "cpu":
        return _host_scalars_agd(params, grads, sq, scales, L, gain, should_apply)
    eta, terms, coeffs = agd_coefficients(sq, [g.shape for g in grads], scales, L, gain)
    if should_apply is None:
        ok = torch.isfinite(terms.sum())
        eta = torch.where(ok, eta, 0.0)
        coeffs = [torch.where(ok, c, 0.0) for c in coeffs]
        grads = [torch.where(ok, g, 0.0) for g in grads]
    elif not should_apply(float(terms.sum())):
        return eta, terms
    for p, g, c in zip(params, grads, coeffs):
        _apply(p, g, c)
    return eta, terms


def _host_scalars_agd(params: list[Tensor], grads: list[Tensor], sq: list[Tensor],
                      scales: list[float], L: int, gain: list[float], should_apply: ShouldApply
                      ) -> tuple[Tensor, Tensor]:
    """CPU variant of the fast path: the handful of scalars (G, η, one coefficient per slice)
    are computed in Python floats, since on CPU reading them costs nothing and a dozen tiny
    tensor ops cost more than the arithmetic; matrices then take the plain ``add_(g, alpha)``.
    """
    flat = torch.cat([q.reshape(-1) for q in sq]).tolist()
    owner_scale = [s for q, s in zip(sq, scales) for _ in range(q.numel())]
    norms = [math.sqrt(x) if x >= 0 else math.nan for x in flat]
    terms_list = [s * n for s, n in zip(owner_scale, norms)]
    terms = torch.tensor(terms_list, dtype=grads[0].dtype)
    total = math.fsum(terms_list)
    eta = math.log((1 + math.sqrt(1 + 4 * total / L)) / 2) if math.isfinite(total) else math.nan
    if not should_apply(total):
        return torch.tensor(eta, dtype=grads[0].dtype), terms
    start = 0
    for p, g, q, s, gn in zip(params, grads, sq, scales, gain):
        cs = [(-gn * s / L) * eta / n if n > 0 else 0.0 for n in norms[start:start + q.numel()]]
        start += q.numel()
        if len(cs) == 1:
            p.add_(g, alpha=cs[0])
        else:
            _apply(p, g, torch.tensor(cs, dtype=g.dtype))
    return torch.tensor(eta, dtype=grads[0].dtype), terms
