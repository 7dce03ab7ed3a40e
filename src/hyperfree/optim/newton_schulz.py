r"""Orthogonalisation by a Newton–Schulz iteration: ``D ≈ U Vᵀ`` for ``G = U Σ Vᵀ``.

The polar factor ``U Vᵀ`` is the duality map of the spectral norm (``../shared/SPEC.md`` §1.5):
the unit-spectral-norm matrix most aligned with ``G``. Computing it by SVD is slow on
accelerators, so — as Muon does (Jordan et al., 2024, "Muon: An optimizer for hidden layers")
— it is approximated by odd matrix polynomials, one per iteration:

.. code-block:: text

    X₀ = G / ‖G‖_F                      (all singular values now in [0, 1])
    X_{k+1} = a_k X_k + (b_k A + c_k A²) X_k,  A = X_k X_kᵀ      (X kept wide: rows ≤ cols)
    (a_k, b_k, c_k) = coefficients[min(k, len(coefficients) − 1)],  k = 0 … steps − 1
    default: (3.4445, −4.7750, 2.0315) at every step (Jordan's), 5 steps

Each step maps every singular value ``x`` to ``p_k(x) = a_k x + b_k x³ + c_k x⁵`` and leaves the
singular vectors alone, so ``D = U f(Σ/‖G‖_F) Vᵀ`` with ``f = p_{steps−1} ∘ … ∘ p_0``.
Jordan's quintic pushes every ``x ≥ 3·10⁻³`` into ``[0.68, 1.20]`` in 5 steps (``x ≥ 10⁻³``:
``[0.47, 1.20]``) — fast, not exact: on the race's momenta ``⟨G, D⟩`` estimates the nuclear norm
``Σ σ_i`` 8–12% low (``benchmarks/orthogonalize.py``). A zero matrix stays zero.

A matrix with one row or one column (a conv's kernel slice of a 1-channel input, every
``1 × 1`` slice of a depthwise conv, a head with one output) has rank one: its one singular
value is ``‖G‖_F``, so ``U Vᵀ = G / ‖G‖_F`` exactly, and that is what is returned, in float32 or
wider, with no iteration. (The iteration would cost ``steps`` batched products of ``1 × 1``
matrices — for a depthwise conv one per channel and kernel position — and would leave that
singular value at ``p(p(…p(1)))``, 0.70 for Jordan's quintic: a 30% shorter step than the
polar factor's, on exactly the matrices where the polar factor is free.) Stacks
``(n, d_out, d_in)`` are iterated as one batch (on CPU: in cache-sized chunks, below), so
matrices of the same shape share batched products: ``steps`` × (2 r²c + r³) multiply-adds for
an ``r × c`` matrix, ``r ≤ c``.

Per-step schedules (``coefficients=``; the optimiser's default stays Jordan's, see below):

* :data:`POLAR_EXPRESS` — Amsel, Persson, Musco, Gower, *The Polar Express* (arXiv 2505.16932,
  Algorithm 1): each polynomial is the minimax one on the interval of singular values the
  previous ones leave, starting from ``[10⁻³, 1]``, with the paper's bfloat16 safety factor.
  5 steps: ``x ≥ 10⁻³`` into ``[0.84, 1.12]`` at Jordan's cost.
* :data:`NS4_SCHEDULE` — the same construction for 4 steps on ``[2·10⁻³, 1]``: ``x ≥ 2·10⁻³``
  into ``[0.65, 1.33]`` (``x ≥ 10⁻³``: ``[0.34, 1.33]``) with 4/5 of the products; on the race's
  momenta its nuclear-norm estimate is closer than Jordan's 5 steps (1–4% against 8–12%) and its
  distance to the polar factor 0.04–0.07 larger (``docs/time-to-result.md``).

Measured on this project's CPU (``benchmarks/orthogonalize.py``, 1 thread): the bfloat16
iteration runs 1.8–2.1× faster than float32 (AVX512-BF16), so bfloat16 stays the default; the
Gram form of the same polynomial (iterating on ``X Xᵀ``) diverges in bfloat16 and is slower in
float32; no warm start applies (the iteration keeps its start's singular vectors). The
optimiser's default stays Jordan's 5 steps: the reference twin and the specification tests
transcribe that iteration (the twin's ``_ns``, ``tests/optim/agd_spec.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NS_COEFFICIENTS", "NS_STEPS", "POLAR_EXPRESS", "NS4_SCHEDULE", "CPU_CHUNK_BYTES",
           "orthogonalize", "ns_dtype", "batched_dot"]

Coefficients = tuple[float, float, float]

NS_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
#: On CPU, the most bytes of the stack one batched product works on (this project's EPYC has
#: 1 MiB of L2 per core): the race's bfloat16 stacks of 14 × 512² and 30 × 256² run 4% and 6%
#: faster in such chunks than in one batch (``benchmarks/orthogonalize.py``, row ``unchunked``)
CPU_CHUNK_BYTES = 1 << 20


def _safe(schedule: Sequence[Coefficients], safety: float = 1.01) -> tuple[Coefficients, ...]:
    """arXiv 2505.16932 §4.4, Algorithm 1: every polynomial but the last evaluated at
    ``x / safety``, and the first once more (the paper normalises by ``safety · ‖G‖_F``), so an
    input that bfloat16 rounding pushed past the designed interval is not blown up."""
    out = [(a / safety, b / safety ** 3, c / safety ** 5) for a, b, c in schedule[:-1]]
    out += list(schedule[-1:])
    a, b, c = out[0]
    return ((a / safety, b / safety ** 3, c / safety ** 5), *out[1:])


#: Polar Express, degree 5, for singular values in [1e-3, 1] (arXiv 2505.16932, Algorithm 1,
#: with its safety factor 1.01 folded in); steps beyond 8 repeat the last polynomial.
POLAR_EXPRESS: tuple[Coefficients, ...] = _safe((
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375)))

#: The Polar Express construction for 4 steps on [2e-3, 1]: greedy minimax quintics by Remez
#: exchange (``benchmarks/orthogonalize.py::minimax_schedule``), safety factor 1.01 as above.
NS4_SCHEDULE: tuple[Coefficients, ...] = _safe((
    (8.4267878027688, -24.936134041638887, 18.49249286275303),
    (4.111647386710227, -3.0591296365202267, 0.5749535461374834),
    (3.7145695793469793, -2.7781246039612593, 0.54293907204913),
    (2.7819504728217437, -2.074927177447771, 0.4635007601941401)))


def ns_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """The iteration's dtype: bfloat16 for parameters of 32 bits or fewer (as Muon; fast on
    GPUs and on CPUs with bf16 units), float64 for float64 parameters (exact tests)."""
    return torch.float64 if param_dtype == torch.float64 else torch.bfloat16


def orthogonalize(G: Tensor, *, steps: int = NS_STEPS, dtype: torch.dtype | None = None,
                  coefficients: Sequence[Coefficients] | None = None) -> Tensor:
    """``(n, r, c)`` -> ``(n, r, c)``: the Newton–Schulz polar factor of every matrix.

    Computed in ``dtype`` (default :func:`ns_dtype` of ``G``'s dtype) and returned in
    ``G``'s dtype; matrices with one row or one column are returned exactly, ``G / ‖G‖_F``. ``coefficients``: the per-step ``(a, b, c)`` (the last one repeats; default
    ``(NS_COEFFICIENTS,)``), e.g. :data:`POLAR_EXPRESS` or :data:`NS4_SCHEDULE` with ``steps=4``.
    On CPU the stack is iterated in chunks of at most :data:`CPU_CHUNK_BYTES` (one matrix at a
    time, with 2-D products, when a matrix alone is larger): the same products, cache-sized.
    """
    if G.dim() != 3:
        raise ValueError(f"orthogonalize expects a stack (n, d_out, d_in), got {tuple(G.shape)}")
    schedule = _schedule(coefficients)
    if min(G.shape[-2:]) == 1:  # rank one: U Vᵀ = G / ‖G‖_F exactly (module docstring)
        acc = torch.promote_types(G.dtype, torch.float32)
        norm = torch.linalg.vector_norm(G, dim=(-2, -1), keepdim=True, dtype=acc)
        return (G.to(acc) / norm.clamp_min(torch.finfo(acc).tiny)).to(G.dtype)
    dtype = dtype or ns_dtype(G.dtype)
    X = G.to(dtype, copy=True)  # a copy even in G's dtype: normalised in place below
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    X.div_(norm.clamp_min(torch.finfo(X.dtype).tiny))
    chunk = len(X)
    if X.device.type == "cpu" and len(X) > 1:
        chunk = max(1, CPU_CHUNK_BYTES // max(1, X[0].numel() * X.element_size()))
    if chunk >= len(X):
        X = _iterate(X, steps, schedule)
    elif chunk == 1:
        X = torch.stack([_iterate(x, steps, schedule) for x in X])
    else:
        X = torch.cat([_iterate(x, steps, schedule) for x in X.split(chunk)])
    if tall:
        X = X.mT
    return X.to(G.dtype)


def _iterate(X: Tensor, steps: int, schedule: Sequence[Coefficients]) -> Tensor:
    """The iteration of the module docstring on normalised wide matrices: a stack ``(n, r, c)``
    (batched products) or one matrix ``(r, c)``."""
    fma = torch.baddbmm if X.dim() == 3 else torch.addmm  # β·self + α·(m1 @ m2)
    for k in range(steps):
        a, b, c = schedule[min(k, len(schedule) - 1)]
        A = X @ X.mT
        B = fma(A, A, A, beta=b, alpha=c)  # b·A + c·A²
        X = fma(X, B, X, beta=a)           # a·X + B·X
    return X


def _schedule(coefficients: Sequence[Coefficients] | None) -> tuple[Coefficients, ...]:
    if coefficients is None:
        return (NS_COEFFICIENTS,)
    schedule = tuple(tuple(float(v) for v in abc) for abc in coefficients)
    if not schedule or any(len(abc) != 3 for abc in schedule):
        raise ValueError("orthogonalize coefficients must be a non-empty sequence of (a, b, c) "
                         f"triples, got {coefficients!r}")
    return schedule  # type: ignore[return-value]


def batched_dot(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``(n, r, c), (n, r, c) -> (n,)``: ``⟨a_i, b_i⟩`` of every pair, in ``dtype``, as one
    batched matrix product (no full-size temporary, unlike ``(a * b).sum``)."""
    a, b = a.flatten(1).to(dtype), b.flatten(1).to(dtype)
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).flatten()
