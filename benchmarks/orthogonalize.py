"""Orthogonalisation methods on the race's real inputs: time side by side, and quality against
the exact polar factor (float64 SVD).

    .venv/bin/python benchmarks/orthogonalize.py [--workloads fcn16,fcn32,conv,gpt,lstm]
        [--steps 200] [--rounds 7] [--threads 1] [--cache DIR] [--methods a,b,...]

Inputs: each workload (``benchmarks/_race_workloads.py``) is trained with the default
``hyperfree.AGD(model)`` for ``--steps`` steps; every stack AGD hands to ``orthogonalize`` at the
last step (and the 4 before it, for the reuse rows) is recorded — the momentum (β = 0.95) of real
gradients, cut into AGD's cells, in the shapes the step batches them. ``fcn16`` also records the
raw gradients of ``preset="spectral"`` (no momentum: rank ≤ batch 128) for the thin-polar rows.

Time: every method orthogonalises all the workload's stacks (as one step does), in shuffled
interleaved rounds; the median time, and the median over rounds of the ratio to ``current``
(``orthogonalize`` as the optimiser calls it) and to ``muon`` (``torch.optim.Muon``'s
Newton–Schulz, one matrix at a time, as Muon runs it) in the same round.

Quality, per matrix ``G = U Σ Vᵀ`` (float64 SVD), median over the workload's matrices:

* ``nuc``: ``⟨G, D⟩ / ‖G‖_* − 1`` — the error of the nuclear-norm estimate AGD's ``G`` sums;
* ``band``: ``max |u_iᵀ D v_i − 1|`` over the singular pairs with ``σ_i ≥ 10⁻³ σ_1`` — how far
  from 1 the direction's gain on G's significant singular directions strays (0 = polar);
* ``polar``: ``‖D − U_r V_rᵀ‖_F / √r``, ``r = #{σ_i ≥ 10⁻³ σ_1}`` — distance to the exact polar
  factor of the significant part (gain errors, rounding noise and tail leakage together);
* ``vs cur``: ``‖D − D_current‖_F / ‖D_current‖_F`` — is it the same answer as today's?

The methods (prototypes here; ``orthogonalize`` is the library's): ``current`` (Jordan's
quintic, 5 steps, bfloat16), ``fp32`` (the same in float32), ``muon``, ``unchunked`` (current
with the whole stack in one batched product, as before the CPU chunks), ``jordan-k`` (k steps;
3 is airbench's), ``pe-k`` (the Polar Express schedule's first k polynomials, arXiv 2505.16932),
``minimax-k@l`` (greedy minimax schedules designed here by Remez exchange for k steps on
``[l, 1]``: the Polar Express construction at other ``(k, l)``), ``gram`` (Jordan's iteration on
the small Gram matrix: the same polynomial), ``ns4`` and ``pe-k`` with the library's schedules
(``coefficients=``), ``thin-k`` (randomized range finder with k columns
and one power step, then the exact polar factor of the k × d_in sketch: exact when rank ≤ k),
``reuse-k`` (quality only: the direction of the momentum k steps earlier — what a warm start
that skips the iteration would use), ``svd`` (float32 ``torch.linalg.svd``).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _race_workloads as W  # noqa: E402

from hyperfree.optim import newton_schulz  # noqa: E402
from hyperfree.optim.newton_schulz import (NS4_SCHEDULE, NS_COEFFICIENTS,  # noqa: E402
                                           POLAR_EXPRESS, _safe, orthogonalize)

Coeffs = Sequence[tuple[float, float, float]]


# ---------------------------------------------------------------- schedule design (Remez)
def minimax_quintic(lo: float, hi: float) -> tuple[float, float, float, float]:
    """The odd ``p(x) = a x + b x³ + c x⁵`` minimising ``max_[lo, hi] |1 − p|``: (a, b, c, E).
    Remez exchange on 4 alternation points (lo, two interior extrema, hi)."""
    xs = np.array([lo, lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4, hi])
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    a = b = c = E = 0.0
    for _ in range(100):
        a, b, c, E = np.linalg.solve(np.stack([xs, xs ** 3, xs ** 5, signs], 1), np.ones(4))
        ys = np.roots([5 * c, 3 * b, a])  # p'(x) = 0 with y = x²
        crit = np.sqrt(np.sort(ys[np.isreal(ys)].real.clip(min=0)))
        crit = crit[(crit > lo) & (crit < hi)]
        if len(crit) != 2:
            break
        new = np.array([lo, crit[0], crit[1], hi])
        if np.allclose(new, xs, rtol=1e-15, atol=0):
            break
        xs = new
    return float(a), float(b), float(c), float(abs(E))


def minimax_schedule(lo: float, steps: int) -> list[tuple[float, float, float]]:
    """Greedy minimax schedule (the Polar Express construction) for singular values in
    ``[lo, 1]``: each polynomial is the minimax one on the interval the previous ones leave,
    ``[p(lo), 1 + E]``. Raw: the library's ``_safe`` adds the paper's safety factor
    (``NS4_SCHEDULE = _safe(minimax_schedule(2e-3, 4))``)."""
    out, hi = [], 1.0
    for _ in range(steps):
        a, b, c, E = minimax_quintic(lo, hi)
        lo, hi = a * lo + b * lo ** 3 + c * lo ** 5, 1.0 + E
        out.append((a, b, c))
    return out


# ---------------------------------------------------------------- prototypes
def ns(G: Tensor, coeffs: Coeffs, steps: int, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Newton–Schulz with per-step coefficients (the last repeated): ``orthogonalize``'s loop."""
    X = G.to(dtype, copy=True)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    for k in range(steps):
        a, b, c = coeffs[min(k, len(coeffs) - 1)]
        A = X @ X.mT
        X = torch.baddbmm(X, torch.baddbmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return (X.mT if tall else X).to(G.dtype)


def gram_ns(G: Tensor, coeffs: Coeffs, steps: int, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """The same polynomial on the small Gram matrix ``R = X Xᵀ`` (r × r, r ≤ c):
    ``P = a I + b R + c R²``, ``Q ← P Q``, ``R ← P R P``; finally ``D = Q X₀``. All products
    are r × r except the first and the last (r² c each) — fewer flops when c > 1.5 r."""
    X = G.to(dtype, copy=True)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    R = X @ X.mT
    eye = torch.eye(R.shape[-1], dtype=dtype).expand_as(R)
    Q = None
    for k in range(steps):
        a, b, c = coeffs[min(k, len(coeffs) - 1)]
        P = torch.baddbmm(R, R, R, beta=b, alpha=c).add_(eye, alpha=a)
        Q = P if Q is None else P @ Q
        if k + 1 < steps:
            R = P @ R @ P
    D = Q @ X
    return (D.mT if tall else D).to(G.dtype)


def muon(G: Tensor) -> Tensor:
    """``torch.optim.Muon``'s Newton–Schulz, one matrix at a time (as Muon steps)."""
    from torch.optim._muon import EPS, _zeropower_via_newtonschulz

    return torch.stack([_zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, EPS).to(G.dtype)
                        for g in G])


def thin(G: Tensor, k: int, power: int = 1) -> Tensor:
    """Polar factor through a k-column sketch (float32): ``Y = (G Gᵀ)^power G Ω``, ``Q = qr(Y)``,
    ``S = Qᵀ G`` (k × c), ``polar(S) = W Λ^(-1/2) Wᵀ S`` from ``eigh(S Sᵀ)``, ``D = Q polar(S)``.
    Exact when rank(G) ≤ k (a gradient of a batch of k examples)."""
    X = G.float()
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    if k >= X.shape[-2]:
        return svd_polar(G)
    omega = torch.randn(X.shape[-1], k, generator=torch.Generator().manual_seed(0))
    Y = X @ omega
    for _ in range(power):
        Y = X @ (X.mT @ torch.linalg.qr(Y).Q)
    Q = torch.linalg.qr(Y).Q
    S = Q.mT @ X
    lam, Wv = torch.linalg.eigh(S @ S.mT)
    inv = torch.where(lam > lam[..., -1:] * 1e-10, lam.clamp_min(1e-30).rsqrt(), 0.0)
    D = Q @ ((Wv * inv.unsqueeze(-2)) @ (Wv.mT @ S))
    return (D.mT if tall else D).to(G.dtype)


def unchunked(G: Tensor) -> Tensor:
    """``orthogonalize`` with the whole stack in one batch (no CPU chunks): the layout before."""
    saved = newton_schulz.CPU_CHUNK_BYTES
    newton_schulz.CPU_CHUNK_BYTES = 1 << 62
    try:
        return orthogonalize(G, steps=5)
    finally:
        newton_schulz.CPU_CHUNK_BYTES = saved


def svd_polar(G: Tensor) -> Tensor:
    U, _, Vh = torch.linalg.svd(G.float(), full_matrices=False)
    return (U @ Vh).to(G.dtype)


def methods(names: Sequence[str] | None) -> dict[str, Callable[[Tensor], Tensor]]:
    f32 = torch.float32
    J = [NS_COEFFICIENTS]
    out: dict[str, Callable[[Tensor], Tensor]] = {
        "current": lambda G: orthogonalize(G, steps=5),
        "fp32": lambda G: orthogonalize(G, steps=5, dtype=f32),
        "muon": muon, "unchunked": unchunked,
        "jordan-4": lambda G: ns(G, J, 4), "jordan-3": lambda G: ns(G, J, 3),
        "pe-5": lambda G: orthogonalize(G, steps=5, coefficients=POLAR_EXPRESS),
        "pe-4": lambda G: orthogonalize(G, steps=4, coefficients=POLAR_EXPRESS),
        "pe-3": lambda G: orthogonalize(G, steps=3, coefficients=POLAR_EXPRESS),
        "ns4": lambda G: orthogonalize(G, steps=4, coefficients=NS4_SCHEDULE),
        "gram": lambda G: gram_ns(G, J, 5), "gram-fp32": lambda G: gram_ns(G, J, 5, f32),
        "thin-128": lambda G: thin(G, 128), "svd": svd_polar,
    }
    for steps, lo in ((4, 3e-3), (3, 1e-2), (3, 5e-3)):
        sched = _safe(minimax_schedule(lo, steps))
        out[f"minimax-{steps}@{lo:g}"] = lambda G, s=sched, k=steps: ns(G, s, k)
    if names:
        unknown = set(names) - set(out)
        if unknown:
            raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {list(out)}")
        out = {n: out[n] for n in ["current", *names] if n in out}
    return out


# ---------------------------------------------------------------- quality
def _svd(G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return torch.linalg.svd(G.double(), full_matrices=False)


def quality(stacks: list[Tensor], Ds: list[Tensor], Dcur: list[Tensor],
            svds: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[float, float, float, float]:
    """(nuc, band, polar, vs cur) medians over every matrix (module docstring)."""
    nuc, band, pol, cur = [], [], [], []
    for G, D, Dc, (U, S, Vh) in zip(stacks, Ds, Dcur, svds):
        G, D, Dc = G.double(), D.double(), Dc.double()
        for i in range(G.shape[0]):
            s = S[i]
            if s[0] == 0:
                continue
            r = int((s >= 1e-3 * s[0]).sum())
            Ur, Vr = U[i][:, :r], Vh[i][:r].mT
            gains = ((Ur.mT @ D[i]) * Vr.mT).sum(-1)  # u_iᵀ D v_i
            nuc.append(float((G[i] * D[i]).sum() / s.sum()) - 1)
            band.append(float((gains - 1).abs().max()))
            pol.append(float(torch.linalg.matrix_norm(D[i] - Ur @ Vr.mT) / math.sqrt(r)))
            cur.append(float(torch.linalg.matrix_norm(D[i] - Dc[i])
                             / torch.linalg.matrix_norm(Dc[i]).clamp_min(1e-30)))
    return tuple(statistics.median(v) for v in (nuc, band, pol, cur))  # type: ignore[return-value]


# ---------------------------------------------------------------- timing
def time_methods(stacks: list[Tensor], fns: dict[str, Callable[[Tensor], Tensor]], rounds: int
                 ) -> dict[str, list[float]]:
    """Seconds for each method to orthogonalise every stack once, per round (interleaved)."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    for fn in fns.values():  # warm up
        for G in stacks:
            fn(G)
    order = list(fns.items())
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name, fn in order:
            t0 = time.perf_counter()
            for G in stacks:
                fn(G)
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``a``'s time / ``b``'s in the same round (robust to load drift)."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def capture(name: str, steps: int, cache: Path | None) -> dict[str, dict[int, list[Tensor]]]:
    """{"momentum": {step: stacks}, ["gradient": ...]} for workload ``name`` (cached)."""
    path = cache / f"{name}-{steps}.pt" if cache else None
    if path is not None and path.exists():
        return torch.load(path)
    w = W.build(name, n_batches=64)
    at = set(range(max(1, steps - 4), steps + 1))
    out = {"momentum": W.capture_polar_inputs(w, steps, at)}
    if name == "fcn16":
        out["gradient"] = W.capture_polar_inputs(w, steps, {steps}, preset="spectral")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
    return out


def report(name: str, kind: str, stacks_by_step: dict[int, list[Tensor]], steps: int,
           fns: dict[str, Callable[[Tensor], Tensor]], rounds: int, timed: bool) -> None:
    stacks = stacks_by_step[steps]
    svds = [_svd(G) for G in stacks]
    shapes = ", ".join(f"{G.shape[0]}x{G.shape[1]}x{G.shape[2]}" for G in stacks)
    print(f"\n## {name}, {kind} at step {steps}: stacks {shapes}")
    times = time_methods(stacks, fns, rounds) if timed else {}
    Dcur = [fns["current"](G) for G in stacks]
    print("| method | ms | x current | x muon | nuc | band | polar | vs cur |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(n, [fn(G) for G in stacks]) for n, fn in fns.items()]
    for k in (1, 4):  # reuse: the direction of the momentum k steps ago
        if steps - k in stacks_by_step:
            rows.append((f"reuse-{k}", [fns["current"](G) for G in stacks_by_step[steps - k]]))
    for n, Ds in rows:
        q = quality(stacks, Ds, Dcur, svds)
        tcols = (f"{1e3 * statistics.median(times[n]):.2f} | {ratio(times, n, 'current'):.2f} | "
                 + (f"{ratio(times, n, 'muon'):.2f}" if "muon" in times else "-")) \
            if n in times else "- | - | -"
        print(f"| {n} | {tcols} | {q[0]:+.3f} | {q[1]:.3f} | {q[2]:.3f} | {q[3]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="fcn16,fcn32,conv,gpt,lstm",
                    help="comma-separated: " + ",".join(W.WORKLOADS))
    ap.add_argument("--steps", type=int, default=200,
                    help="AGD training steps before the inputs are recorded")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder to keep the recorded inputs in (re-used when present)")
    ap.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fns = methods([m for m in args.methods.split(",") if m])
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} "
          "(shared machine: read the ratios, not the milliseconds)")
    for name in args.workloads.split(","):
        caps = capture(name, args.steps, args.cache)
        report(name, "momentum", caps["momentum"], args.steps, fns, args.rounds, True)
        if "gradient" in caps:
            report(name, "raw gradient (preset spectral)", caps["gradient"], args.steps,
                   {n: f for n, f in fns.items() if n in ("current", "thin-128", "svd")},
                   args.rounds, False)


if __name__ == "__main__":
    main()
