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
    retraction  Sphere / Ball         every matrix cell / embedding row rescaled to    -
                                      (sphere) or into (ball) its init norm ρ

``state_dict`` saves every piece's state the same way: a field listed in ``per_param`` is a
list with one tensor per parameter (kept in ``optimizer.state[p][field]``), every other field
is one tensor (kept in ``state_dict()["agd"]["state"][slot][field]``).

The scalar arithmetic (:meth:`SelfEstimate.G`, :meth:`Fresh.G`, :meth:`Sphere.factor`) is
written once over ``xp``, the array namespace of the step's finish: torch on a device (0-dim
tensors, no host sync) or numpy on the host (eager CPU); see :mod:`._apply`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from .cells import LocalRows
from .rules import Kind, KindRule

__all__ = ["Piece", "Direction", "Frobenius", "Spectral", "Gradient", "Momentum",
           "MomentumState", "SelfEstimate", "Fresh", "FreshState", "Sphere", "Ball", "FAMILIES"]


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


# ---------------------------------------------------------------- retraction
@dataclasses.dataclass(frozen=True)
class Sphere(Piece):
    """Every retraction cell back to its init norm ρ (``docs/agd-stability.md`` §5)."""

    def factor(self, norms: Tensor, rho: Tensor) -> Tensor:
        return torch.where(norms > 0, rho / norms, 1.0)


@dataclasses.dataclass(frozen=True)
class Ball(Piece):
    """Every retraction cell whose norm exceeds its init norm ρ back to ρ."""

    def factor(self, norms: Tensor, rho: Tensor) -> Tensor:
        return torch.where(norms > 0, (rho / norms).clamp(max=1.0), 1.0)
