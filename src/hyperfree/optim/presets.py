"""AGD's update presets: one algorithm, a few principled variants, chosen by name.

A :class:`Preset` is one row naming a piece (:mod:`hyperfree.optim.pieces`) for each slot of
the step that is not derived from the architecture:

* ``family`` — the norm whose duality map gives each cell's direction (``docs/agd-rules.md``):
  :class:`~.pieces.Frobenius` is the paper's ``∇/‖∇‖_F`` (exact under its "gradient
  conditioning" assumption), :class:`~.pieces.Spectral` the exact map of each kind's operator
  norm (polar factor of a matrix by Newton–Schulz, sign of a gain's gradient);
* ``source`` — what the directions are taken from: :class:`~.pieces.Gradient`, or
  :class:`~.pieces.Momentum` (β, bias-corrected: ``u = m``, ``G · 1/(1 − β^k)``);
* ``estimate`` — how ``G``, the first-order decrease the majorisation promises, is estimated:
  :class:`~.pieces.SelfEstimate` is ``Σ σ·⟨u, D(u)⟩`` of the direction's own source (the
  paper's), which noise inflates (Jensen); :class:`~.pieces.Fresh` (needs momentum) takes the
  direction from the momentum BEFORE this step's gradient and estimates ``G`` without that bias
  from the fresh gradient, averaged with the same β (the first step only fills the momentum);
  :class:`~.pieces.Fading` is the self-estimate, once its running average has passed its
  peak, held at the least that average has been since (power 1: a late rise is noise or
  curvature, not more promise of decrease) or divided by the square of the rise (power 2: a
  persistent rise is the Jacobian growing, the curvature its square);
* ``retraction`` — keep every matrix block / conv slice / embedding row on
  (:class:`~.pieces.Sphere`) or inside (:class:`~.pieces.Ball`) the Frobenius sphere of AGD's
  initialisation, so that the majorisation's premise ``‖W‖ ≈ s(W)`` keeps holding
  (``docs/agd-stability.md``), or move its norm by the step's first-order term only
  (:class:`~.pieces.Rotation`); ``None`` = never;
* ``average`` — the weights the model is evaluated at (:meth:`hyperfree.optim.AGD.eval`):
  :class:`~.pieces.PolyAverage`, or ``None`` (the iterate itself).

Every preset has no learning rate. :data:`PRESETS` is the registry; :func:`get_preset` looks a
name up. ``paper`` is bit-for-bit the paper's algorithm on bias-free Linear/Conv networks.

The default, ``spectral-head`` (:data:`DEFAULT_PRESET`, §26), is one rule for every network:
``spectral-damped`` with ``head``: the layer that makes the output steps ``1/ρ`` times its
share where ρ < 1 (at most L times), ρ its input's RMS measured on each step's forwards (its
move ``ΔW x`` is exact, the bound takes ρ = 1; :mod:`._head`, ``docs/agd-stability.md`` §25).
``spectral-damped`` (the default from §23 to §26) is
``spectral-average`` (``docs/agd-stability.md`` §9–§16) with G divided by the square of its
running average's rise since that average's peak (:class:`~.pieces.Fading` with power 2,
§23: a rise that persists is the network's Jacobian growing, and the curvature grows as its
square); ``spectral-fading`` (§22) holds G there instead. ``spectral-average`` is: spectral
directions of the momentum (β = 0.8: with the average removing the iterates' noise, a shorter
memory than the 0.95 of the presets without one, §11), G self-estimated, every weight's norm
moved by the step's first-order term only (:class:`~.pieces.Rotation`: the noise's random walk
of the norms is gone, so nothing makes η's plateau unstable), and the weights evaluated at
their polynomial-decay average (:class:`~.pieces.PolyAverage`: the average anneals what η does
not, with no horizon), and ``forks``: a tensor on one side of a sum of forked activations (a
residual branch, a shortcut) has σ √2 larger per such sum, in G and in its step
(:attr:`~.rules.Kind.fork_scale`; ``docs/agd-stability.md`` §10), and ``streams``: where the
sum is one of a stream of sums (a pre-norm transformer's residual stream of T terms), the
step's σ is √T larger instead of √2 (G keeps √2; :attr:`~.rules.Kind.stream_scale`, §16).
``"auto"`` (:data:`AUTO`), the earlier switch on module types between ``spectral-momentum``
and ``spectral-fresh``, now names the default.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .pieces import (Ball, Fading, Fresh, Frobenius, Gradient, Momentum, Piece, PolyAverage,
                     Rotation, SelfEstimate, Spectral, Sphere)

__all__ = ["Preset", "PRESETS", "AUTO", "DEFAULT_PRESET", "get_preset", "list_presets",
           "redefinition", "with_ns_steps"]

_SLOTS = {"family": (Frobenius, Spectral), "source": (Gradient, Momentum),
          "estimate": (SelfEstimate, Fresh, Fading),
          "retraction": (Sphere, Ball, Rotation, type(None)),
          "average": (PolyAverage, type(None))}


@dataclasses.dataclass(frozen=True)
class Preset:
    """One update rule of AGD: a piece per slot (see the module docstring)."""

    name: str
    family: Piece = Frobenius()
    source: Piece = Gradient()
    estimate: Piece = SelfEstimate()
    retraction: Piece | None = None
    average: Piece | None = None
    description: str = ""
    #: scale σ by √2 per fork (:attr:`~.rules.Kind.fork_scale`, ``docs/agd-stability.md`` §10)
    forks: bool = False
    #: the step's σ × √terms of the stream instead (:attr:`~.rules.Kind.stream_scale`; G keeps
    #: the forks' σ; ``docs/agd-stability.md`` §16)
    streams: bool = False
    #: the output layer's step × clamp(1/ρ, 1, L), ρ the RMS of its input measured on the
    #: step's forwards (:mod:`._head`, ``docs/agd-stability.md`` §25); needs the model
    head: bool = False
    #: an embedding row (spectral: ℓ2 per row) moves only on the steps whose gradient uses it
    #: (a non-zero gradient row); the others keep their momentum and take no step
    #: (``docs/agd-stability.md`` §27)
    lazy_rows: bool = False

    def __post_init__(self) -> None:
        for slot, allowed in _SLOTS.items():
            piece = getattr(self, slot)
            if not isinstance(piece, allowed):
                names = ", ".join("None" if a is type(None) else a.__name__ for a in allowed)
                raise ValueError(f"preset {self.name!r}: {slot} must be one of {names}, got "
                                 f"{piece!r}")
        if self.lazy_rows and not isinstance(self.family, Spectral):
            raise ValueError(f"preset {self.name!r}: lazy_rows needs the Spectral family (its "
                             f"embedding rows are cells; {type(self.family).__name__} moves "
                             "a table as one cell)")
        if self.estimate.lagged and not isinstance(self.source, Momentum):
            raise ValueError(f"preset {self.name!r}: estimate {self.estimate!r} needs a "
                             "Momentum source (the direction comes from the momentum of the "
                             "previous steps)")

    @property
    def slots(self) -> dict[str, Piece | None]:
        """``{slot: piece}`` in the order of the step."""
        return {slot: getattr(self, slot) for slot in _SLOTS}

    @property
    def definition(self) -> dict[str, str]:
        """The rule as text, one entry per field but the name and description: what a resumed
        run must match to equal one never stopped (saved in AGD's ``state_dict``)."""
        return {f.name: repr(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in ("name", "description")}

    @property
    def momentum(self) -> float:
        """β of the momentum source (0: the gradient itself)."""
        return self.source.beta


def redefinition(saved: Mapping[str, str] | None, preset: Preset) -> str:
    """What differs between a :attr:`Preset.definition` saved with a state and ``preset``'s
    (``"source Momentum(beta=0.95) -> Momentum(beta=0.8)"``; empty when they agree, or when the
    state predates saved definitions and ``saved`` is None)."""
    if saved is None:
        return ""
    now = preset.definition
    # a field added to Preset since the state was saved had its default then
    added = {f.name: repr(f.default) for f in dataclasses.fields(Preset)
             if f.default is not dataclasses.MISSING}
    changed = [f"{k} {was} -> {v}" for k, v in now.items()
               if (was := saved.get(k, added.get(k, "absent"))) != v]
    changed += [f"{k} {v} -> absent" for k, v in saved.items() if k not in now]
    return "; ".join(changed)


_AVERAGE = Preset("spectral-average", Spectral(), Momentum(0.8), retraction=Rotation(),
                  average=PolyAverage(8.0), forks=True, streams=True,
                  description="spectral with momentum 0.8; norms move at first order only; "
                              "evaluated at the polynomial-decay average of the weights; "
                              "residual branches' steps scaled by their forks and their "
                              "streams' terms")

_DAMPED = dataclasses.replace(
    _AVERAGE, name="spectral-damped", estimate=Fading(0.99, power=2.0),
    description="spectral-average with G divided by the square of its average's rise since "
                "its peak (a persistent rise is the Jacobian growing, and the curvature with its "
                "square)")

_HEAD = dataclasses.replace(
    _DAMPED, name="spectral-head", head=True,
    description="spectral-damped with the output layer's step x 1/rho where rho < 1, rho its "
                "input's RMS measured on the step's forwards (its exact share of the output's "
                "move) (the default)")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("paper", Frobenius(), description="the AGD paper's rule (Bernstein et al. 2023)"),
    Preset("spectral", Spectral(),
           description="exact duality maps: orthogonalised matrices (Newton-Schulz), sign gains"),
    Preset("spectral-momentum", Spectral(), Momentum(0.95),
           description="spectral with momentum 0.95 on the gradient"),
    Preset("spectral-sphere", Spectral(), Momentum(0.95), retraction=Sphere(),
           description="spectral with momentum, weights kept on their init sphere"),
    Preset("paper-momentum", Frobenius(), Momentum(0.95),
           description="the paper's rule with momentum 0.95 (ablation)"),
    Preset("spectral-fresh", Spectral(), Momentum(0.95), Fresh(0.95),
           description="spectral with momentum; G estimated without noise bias from the fresh "
                       "gradient against the previous momentum's direction"),
    _AVERAGE,
    # spectral-average with one piece changed, the estimate of G (§22, §23)
    dataclasses.replace(_AVERAGE, name="spectral-fading", estimate=Fading(0.99),
                        description="spectral-average with G held where its average rises "
                                    "after its peak (the signal fades; a late rise is noise "
                                    "or curvature)"),
    _DAMPED,
    # spectral-damped with the head's step from its input's measured scale (§25)
    _HEAD,
    # spectral-head with the embedding rows a batch does not use left where they are (§27)
    dataclasses.replace(_HEAD, name="spectral-lazy", lazy_rows=True,
                        description="spectral-head with an embedding row moved only on the "
                                    "steps whose gradient uses it (a row the batch does not "
                                    "read keeps its momentum and takes no step)"),
)}

#: The preset ``AGD()`` uses when none is given (the race of docs/race.md decides it).
DEFAULT_PRESET = "spectral-head"
#: The earlier default's name (a switch on module types); it now names :data:`DEFAULT_PRESET`.
AUTO = "auto"


def get_preset(name: str | Preset) -> Preset:
    """The registered preset ``name`` (a :class:`Preset` is returned as is; ``"auto"`` is the
    default)."""
    if isinstance(name, Preset):
        return name
    key = str(name).strip().lower()
    try:
        return PRESETS[DEFAULT_PRESET if key == AUTO else key]
    except KeyError:
        raise ValueError(f"unknown AGD preset {name!r}; choose one of "
                         f"{', '.join(PRESETS)}") from None


def list_presets() -> list[str]:
    """Names of the registered presets, in registration order."""
    return list(PRESETS)


def with_ns_steps(preset: Preset, ns_steps: int) -> Preset:
    """``preset`` with ``ns_steps`` Newton–Schulz iterations in its spectral family (the same
    preset for the Frobenius family, which orthogonalises nothing)."""
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"AGD ns_steps must be an integer >= 1, got {ns_steps!r}")
    if not isinstance(preset.family, Spectral) or preset.family.ns_steps == ns_steps:
        return preset
    return dataclasses.replace(preset, family=Spectral(ns_steps))
