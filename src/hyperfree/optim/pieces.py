r"""The mechanisms AGD's presets are made of: small pieces, each with its own state.

A preset (:mod:`.presets`) is one row naming a piece for each slot of the step
(:func:`hyperfree.optim.functional.agd` has the order); optax's ``init``/``update`` over a
``NamedTuple`` state is the model:

.. code-block:: text

    slot        piece                 what it does                                   state
    family      Frobenius             every cell moves along u_c/‖u_c‖ (the paper)    -
                Spectral              exact duality maps: U Vᵀ, sign, row ℓ2          -
    source      Gradient              u = g                                          -
                Momentum(β)           m ← β m + (1−β) g (finite g only), u = m;        m per param,
                                      G is scaled by 1/(1−β^k)                         k (count)
    estimate    SelfEstimate          G = (1/L) Σ σ_c ⟨u_c, D(u_c)⟩                     -
                Fresh(β)              D from m_{t−1} (lagged); F = (1/L) Σ σ_c ⟨g_c, D_c⟩; H
                                      H ← β H + (1−β) F over steps with a direction;
                                      G = max(0, H / (1 − β^k))
                Fading(β, power)      H ← β H + (1−β) G_self, Ḡ = H/(1−β^n); M the least  H, n,
                                      Ḡ since its peak P; G = G_self · (M/Ḡ)^power     P, M
    retraction  Sphere / Ball         every matrix cell / embedding row rescaled to    -
                                      (sphere) or into (ball) its init norm ρ
                Rotation              every such cell's ‖W‖² changes by its first-order -
                                      term 2⟨Δ, W⟩ only: the step's ‖Δ‖² is taken out
                                      (× (1 − ‖Δ‖²/‖W'‖²)₊, nothing for a long step)
    average     PolyAverage(γ)        x ← x + c (W − x), c = (γ+1)/(k+γ) per taken     x per param,
                                      step k: the weights to evaluate (AGD.eval())     k (count)

``state_dict`` saves every piece's state the same way: a field listed in ``per_param`` is a
list with one tensor per parameter (kept in ``optimizer.state[p][field]``), every other field
is one tensor (kept in ``state_dict()["agd"]["state"][slot][field]``).

The scalar arithmetic (:meth:`SelfEstimate.G`, :meth:`Fresh.G`) is
written once over ``xp``, the array namespace of the step's finish: torch on a device (0-dim
tensors, no host sync) or numpy on the host (eager CPU); see :mod:`._apply`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .cells import LocalRows
from .rules import Kind, KindRule

__all__ = ["Piece", "Direction", "Frobenius", "Spectral", "Gradient", "Momentum",
           "MomentumState", "SelfEstimate", "Fresh", "FreshState", "Fading", "FadingState",
           "Sphere", "Ball", "Rotation", "PolyAverage", "AverageState", "FAMILIES"]


class Piece:
    """A mechanism of the step. ``init`` makes its state (None: stateless); ``per_param`` names
    the state's fields that hold one tensor per parameter."""

    per_param: ClassVar[tuple[str, ...]] = ()
    State: ClassVar[type | None] = None  # the NamedTuple of its state (None: stateless)

    def init(self, params: list[Tensor]) -> NamedTuple | None:
        return None


def _check_beta(owner: str, beta: Any) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 < beta < 1.0:
        raise ValueError(f"{owner}: beta must be a number in (0, 1), got {beta!r}")


def _zero(params: list[Tensor], dtype: torch.dtype, shape: tuple[int, ...] = ()) -> Tensor:
    """A counter or running value next to the weights (no host sync to update it)."""
    device = params[0].device if params else "cpu"
    return torch.zeros(shape, dtype=dtype, device=device)


# ---------------------------------------------------------------- family (used by the plan)
@dataclasses.dataclass(frozen=True)
class Frobenius(Piece):
    """The paper's maps: every cell moves along ``u_c / ‖u_c‖_F``, term ``σ ‖u_c‖_F``."""

    name: ClassVar[str] = "frobenius"
    ns_steps: ClassVar[int] = 0  # no matrix is orthogonalised

    def cells(self, rule: KindRule, shape: tuple[int, ...], kind: Kind, rows: LocalRows
              ) -> list:
        return rule.frobenius_cells(shape, kind, rows)


@dataclasses.dataclass(frozen=True)
class Spectral(Piece):
    """Each kind's exact duality map (``docs/agd-rules.md`` §1): polar factors of matrices
    (``ns_steps`` Newton–Schulz iterations, :mod:`.newton_schulz`), signs of gains, ℓ2 rows of
    embeddings."""

    name: ClassVar[str] = "spectral"
    ns_steps: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.ns_steps, bool) or not isinstance(self.ns_steps, int) \
                or self.ns_steps < 1:
            raise ValueError(f"AGD ns_steps must be an integer >= 1, got {self.ns_steps!r}")

    def cells(self, rule: KindRule, shape: tuple[int, ...], kind: Kind, rows: LocalRows
              ) -> list:
        return rule.spectral_cells(shape, kind, rows)


#: the two families, by name
FAMILIES: dict[str, Piece] = {f.name: f for f in (Frobenius(), Spectral())}


# ---------------------------------------------------------------- source of the directions
class Direction(NamedTuple):
    """What a source gives the step: the tensors whose cells give every direction and term,
    the factor of G (momentum's bias correction; None = 1), and the number of gradients it had
    absorbed before (a lagged estimate's k; None without momentum)."""

    us: list[Tensor]
    bias_correction: Any
    seen: Any


@dataclasses.dataclass(frozen=True)
class Gradient(Piece):
    """``u = g``: the directions and terms come from this step's gradient."""

    beta: ClassVar[float] = 0.0

    def finite(self, grads: list[Tensor], reduce: Any) -> None:
        """No flag of its own: a non-finite gradient makes G non-finite, which skips."""
        return None

    def absorb(self, state: None, grads: list[Tensor], finite: Any) -> None:
        pass

    def current(self, state: None, grads: list[Tensor]) -> Direction:
        return Direction(grads, None, None)


class MomentumState(NamedTuple):
    momentum_buffer: list[Tensor]  # m, one per parameter
    count: Tensor                  # k: finite gradients absorbed (int64, 0-dim)


@dataclasses.dataclass(frozen=True)
class Momentum(Piece):
    """``m ← β m + (1 − β) g`` where every gradient is finite (a skipped step leaves no trace);
    ``u = m`` and G is bias-corrected by ``1/(1 − β^k)`` (directions are scale-free)."""

    beta: float = 0.95
    per_param: ClassVar[tuple[str, ...]] = ("momentum_buffer",)
    State: ClassVar[type] = MomentumState

    def __post_init__(self) -> None:
        _check_beta("Momentum", self.beta)

    def init(self, params: list[Tensor]) -> MomentumState:
        return MomentumState([torch.zeros_like(p, memory_format=torch.preserve_format)
                              for p in params], _zero(params, torch.int64))

    def finite(self, grads: list[Tensor], reduce: Any) -> Tensor:
        """Whether every gradient is finite (0-dim bool; over every shard when sharded)."""
        acc = torch.float64 if grads[0].dtype == torch.float64 else torch.float32
        total = torch.stack(torch._foreach_norm(grads, dtype=acc)).sum()
        if reduce is not None:  # one more (one-element) all-reduce
            total = reduce(total.reshape(1))[0]
        return torch.isfinite(total)

    def absorb(self, state: MomentumState, grads: list[Tensor], finite: Tensor | bool) -> None:
        """Take this step's gradient (in place), only where ``finite``."""
        if isinstance(finite, bool):  # decided on the host
            if finite:
                torch._foreach_lerp_(state.momentum_buffer, grads, 1 - self.beta)
                state.count.add_(1)
            return
        torch._foreach_lerp_(state.momentum_buffer,
                             [torch.where(finite, g, m) for g, m in
                              zip(grads, state.momentum_buffer)], 1 - self.beta)
        state.count.add_(finite.to(state.count.dtype))

    def current(self, state: MomentumState, grads: list[Tensor]) -> Direction:
        """``u = m`` (as it is now), ``1/(1 − β^k)``, and k (0 before any: no direction)."""
        acc = torch.float64 if grads[0].dtype == torch.float64 else torch.float32
        k = state.count.clamp(min=1).to(acc)
        return Direction(state.momentum_buffer, 1.0 / (1.0 - torch.pow(self.beta, k)),
                         state.count)


# ---------------------------------------------------------------- how G is estimated
@dataclasses.dataclass(frozen=True)
class SelfEstimate(Piece):
    """``G = (1/L) Σ σ_c ⟨u_c, D(u_c)⟩``: the first-order decrease the direction's own source
    promises (the paper's; noise inflates it)."""

    lagged: ClassVar[bool] = False

    def G(self, xp: Any, state: None, G_self: Any, F: Any, ok: Any, k: Any) -> Any:
        return G_self


class FreshState(NamedTuple):
    H: Tensor  # running average of F, shape (1,) float64 (see Fresh.init)


@dataclasses.dataclass(frozen=True)
class Fresh(Piece):
    """G without the noise bias (``docs/agd-stability.md`` §4): the direction comes from the
    momentum BEFORE this gradient (``lagged``), so ``F = (1/L) Σ σ_c ⟨g_c, D_c⟩`` is unbiased;
    ``H ← β H + (1 − β) F`` over the ``k`` steps that had a direction and were finite,
    ``G = max(0, H/(1 − β^k))``. The first step (``k = 0``) only fills the momentum: η = 0."""

    beta: float = 0.95
    lagged: ClassVar[bool] = True
    State: ClassVar[type] = FreshState

    def __post_init__(self) -> None:
        _check_beta("Fresh", self.beta)

    def init(self, params: list[Tensor]) -> FreshState:
        # (1,), not 0-dim: torch.compile on torch 2.13 drops in-place updates of a 0-dim
        # float64 CPU tensor held outside the graph (tests/optim/test_agd_compile.py)
        return FreshState(_zero(params, torch.float64, (1,)))

    def G(self, xp: Any, state: FreshState, G_self: Any, F: Any, ok: Any, k: Any) -> Any:
        """Average ``F`` into ``H`` (in place, where a direction existed and ``ok``); ``G``."""
        H = xp.read(state.H)
        valid = (k > 0) & ok
        H = xp.where(valid, self.beta * H + (1 - self.beta) * xp.cast(F, H), H)
        xp.write(state.H, H)
        kk = xp.cast(xp.maximum(k, 1), H)
        return xp.maximum(xp.where(k > 0, H / (1 - self.beta ** kk), 0.0), 0.0)


class FadingState(NamedTuple):
    H: Tensor      # running average of G_self, shape (1,) float64 (see Fresh.init)
    n: Tensor      # the steps averaged, (1,) float64
    peak: Tensor   # the largest bias-corrected average so far, (1,) float64
    least: Tensor  # the least it has been since that peak, (1,) float64


@dataclasses.dataclass(frozen=True)
class Fading(Piece):
    """The self-estimate, held or damped where it rises after its peak
    (``docs/agd-stability.md`` §22–§23): ``H ← β H + (1 − β) G_self`` over the steps taken,
    ``Ḡ = H/(1 − β^n)``; ``P`` the largest ``Ḡ`` so far and ``M`` the least ``Ḡ`` since ``P``
    (``M = Ḡ`` at every new peak); ``G = G_self · (M/Ḡ)^power``.

    ``power = 1`` (§22, the hold): the expected gradient's promise of decrease fades as a run
    goes on, so for every step ``s`` between the peak and now ``G_self(s)``, an upper bound of
    the signal then (noise inflates it), bounds the signal now too, and ``M`` is the tightest
    such bound; a late rise of ``G_self`` is noise or curvature, not promise, and η is held at
    the level it had fallen to. ``power = 2`` (§23, the damping): a rise that persists is the
    network's Jacobian growing (a recurrent weight's gradient grows with the weight; the loss's
    gradient in the output is bounded), so ``G_self`` keeps the promise it measures but the
    curvature along a step of AGD's fixed size grows as the Jacobian's square (Gauss–Newton),
    ``ρ² = (Ḡ/M)²``, and the majorant with curvature ``ρ²`` is least at AGD's η of
    ``G_self/ρ²``. Where ``Ḡ`` falls, ``M = Ḡ`` and either is :class:`SelfEstimate` up to
    the average's lag."""

    beta: float = 0.99
    power: float = 1.0
    State: ClassVar[type] = FadingState

    lagged: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_beta("Fading", self.beta)
        p = self.power
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1.0 <= p < math.inf:
            raise ValueError(f"Fading: power must be a number at least 1 (1: hold G, 2: damp it "
                             f"by its rise squared), got {p!r}")

    def __repr__(self) -> str:
        # the hold's text as before §23, so a state saved then resumes with no redefinition
        more = "" if self.power == 1 else f", power={self.power!r}"
        return f"Fading(beta={self.beta!r}{more})"

    def init(self, params: list[Tensor]) -> FadingState:
        return FadingState(*(_zero(params, torch.float64, (1,)) for _ in range(4)))

    def G(self, xp: Any, state: FadingState, G_self: Any, F: Any, ok: Any, k: Any) -> Any:
        """Average ``G_self`` into ``H`` and move the peak and the least (in place, where
        ``ok``); ``G``."""
        H, n, peak, least = (xp.read(t) for t in state)
        g = xp.cast(xp.where(ok, G_self, 0.0), H)
        n = xp.where(ok, n + 1.0, n)
        H = xp.where(ok, self.beta * H + (1 - self.beta) * g, H)
        avg = H / (1 - self.beta ** xp.maximum(n, 1.0))
        rising = avg >= peak
        peak = xp.where(ok & rising, avg, peak)
        least = xp.where(ok, xp.where(rising | (avg < least), avg, least), least)
        for t, v in zip(state, (H, n, peak, least)):
            xp.write(t, v)
        ratio = xp.where(avg > least, least / avg, 1.0)
        return G_self * xp.cast(ratio if self.power == 1 else ratio ** self.power, G_self)


# ---------------------------------------------------------------- retraction
# factor(sq, rho, delta_sq): the multiplier of every retraction cell from its squared norm after
# the move, its init norm ρ and (pieces with ``needs_step``) the squared norm of its move ‖Δ‖²
@dataclasses.dataclass(frozen=True)
class Sphere(Piece):
    """Every retraction cell back to its init norm ρ (``docs/agd-stability.md`` §5)."""

    needs_step: ClassVar[bool] = False

    def factor(self, sq: Tensor, rho: Tensor | float, delta_sq: Tensor | None = None) -> Tensor:
        return torch.where(sq > 0, rho * sq.rsqrt(), 1.0)


@dataclasses.dataclass(frozen=True)
class Ball(Piece):
    """Every retraction cell whose norm exceeds its init norm ρ back to ρ."""

    needs_step: ClassVar[bool] = False

    def factor(self, sq: Tensor, rho: Tensor | float, delta_sq: Tensor | None = None) -> Tensor:
        return torch.where(sq > 0, (rho * sq.rsqrt()).clamp(max=1.0), 1.0)


@dataclasses.dataclass(frozen=True)
class Rotation(Piece):
    """Every retraction cell's squared norm changes by the step's first-order term only
    (``docs/agd-stability.md`` §8): after ``W' = W + Δ``, ``‖W'‖² = ‖W‖² + 2⟨Δ, W⟩ + ‖Δ‖²``,
    and the factor takes the ``‖Δ‖²`` out, so the part of the step along ``W`` moves the norm
    as the gradient flow would and the part across ``W`` turns the cell without growing it
    (the random walk of the norms that noise drives otherwise). The premise is a step short
    against the weight; with ``ρ = ‖Δ‖²/‖W'‖²`` what is taken out is ``‖Δ‖² (1 − ρ)₊``, the
    same to second order in ``‖Δ‖/‖W‖`` and nothing where the step is as long as the weight
    (a cell that starts at zero moves freely): ``factor = √(1 − ρ (1 − ρ)₊) ≥ √(3/4)``."""

    needs_step: ClassVar[bool] = True

    def factor(self, sq: Tensor, rho: Tensor | float, delta_sq: Tensor | None = None) -> Tensor:
        r = torch.where(sq > 0, delta_sq / sq, 1.0)
        return (1.0 - r * (1.0 - r).clamp(min=0.0)).sqrt()


# ---------------------------------------------------------------- averaged weights
class AverageState(NamedTuple):
    average: list[Tensor]  # x, one per parameter
    count: Tensor          # k: the steps averaged (int64, 0-dim)


@dataclasses.dataclass(frozen=True)
class PolyAverage(Piece):
    """Polynomial-decay averaging of the weights (Shamir & Zhang 2013, ICML, "Stochastic
    gradient descent for non-smooth optimization: convergence results and optimal averaging
    schemes", §4): after every step taken,
    ``k ← k + 1``, ``x ← x + c (W − x)`` with ``c = (γ + 1)/(k + γ)`` (the first step copies
    ``W``). ``x`` weighs the iterate of step ``s`` about as ``s^γ``: an average over the last
    ``≈ 1/(γ + 1)`` of the run at any time, with no horizon (``docs/agd-stability.md`` §8).
    γ = 8 is DoG's (Ivgi, Hinder, Carmon 2023, "DoG is SGD's best friend", §4), whose step,
    like AGD's, is set by a rule rather than a schedule.
    The step trains ``W``; :meth:`hyperfree.optim.AGD.eval` puts ``x`` in the model."""

    gamma: float = 8.0
    per_param: ClassVar[tuple[str, ...]] = ("average",)
    State: ClassVar[type] = AverageState

    def __post_init__(self) -> None:
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 <= g < 1e6:
            raise ValueError(f"PolyAverage: gamma must be a number >= 0, got {g!r}")

    def init(self, params: list[Tensor]) -> AverageState:
        """The average starts at the weights (a parameter added later joins at its value; the
        first step taken copies ``W`` whatever ``x`` was)."""
        return AverageState([p.detach().clone(memory_format=torch.preserve_format)
                             for p in params], _zero(params, torch.int64))

    def update(self, state: AverageState, params: list[Tensor], ok: Any) -> None:
        """Average the weights just stepped (in place); ``ok`` False (a skipped step on the
        device, a 0-dim bool tensor) changes nothing."""
        if isinstance(ok, (bool, np.bool_)):
            state.count.add_(1)
            c = (self.gamma + 1.0) / (int(state.count) + self.gamma)
        else:
            state.count.add_(ok.to(state.count.dtype))
            k = state.count.to(torch.float64)
            c = torch.where(ok, (self.gamma + 1.0) / (k + self.gamma), 0.0)
        if not isinstance(c, Tensor):
            torch._foreach_lerp_(state.average, params, c)
            return
        for dtype in {p.dtype for p in params}:  # a tensor weight has the tensors' dtype
            pick = [i for i, p in enumerate(params) if p.dtype == dtype]
            torch._foreach_lerp_([state.average[i] for i in pick], [params[i] for i in pick],
                                 c.to(dtype))
