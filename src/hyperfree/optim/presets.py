"""AGD's update presets: one algorithm, a few principled variants, chosen by name.

A :class:`Preset` fixes the parts of the update that are not derived from the architecture:

* ``family`` — the norm whose duality map gives each cell's direction (``docs/agd-rules.md``):
  ``"frobenius"`` is the paper's ``∇/‖∇‖_F`` (exact under its "gradient conditioning"
  assumption), ``"spectral"`` the exact map of each kind's operator norm (polar factor of a
  matrix by Newton–Schulz, sign of a gain's gradient);
* ``momentum`` — β of an exponential moving average of the gradient that replaces the gradient
  everywhere (direction and ``G``), bias-corrected: ``u = m/(1 − β^t)``; 0 = none;
* ``retract`` — keep every matrix block / conv slice / embedding row on (``"sphere"``) or
  inside (``"ball"``) the Frobenius sphere of AGD's initialisation, so that the majorisation's
  premise ``‖W‖ ≈ s(W)`` keeps holding (``docs/agd-stability.md``); ``None`` = never;
* ``estimate`` — how ``G``, the first-order decrease the majorisation promises, is estimated:
  ``"self"`` is ``Σ σ·⟨u, D(u)⟩`` of the direction's own source (the paper's, with ``u`` the
  gradient or the momentum), which noise inflates (Jensen); ``"fresh"`` (needs momentum) takes
  the direction from the momentum BEFORE this step's gradient, ``D = D(m_{t−1})``, and
  estimates ``G`` without that bias from the fresh gradient, ``F_t = Σ σ·⟨g_t, D⟩ / L``,
  averaged with the same β: ``G = max(0, H_t/(1 − β^k))``, ``H_t = β H_{t−1} + (1 − β) F_t``
  over the ``k`` steps that had a direction (the first step only fills the momentum).

Every preset has no learning rate. :data:`PRESETS` is the registry; :func:`get_preset` looks a
name up. ``paper`` is bit-for-bit the paper's algorithm on bias-free Linear/Conv networks.

``"auto"`` (:data:`AUTO`, the default) is not a preset but a choice of one by the network's
structure, made once when AGD is built (:func:`choose_preset`): ``spectral-momentum`` if the
network has a normalisation layer, ``spectral-fresh`` if it has none. Why: noise in the self
estimate keeps η from falling, so each step spends the budget in noise directions and the
weights' norms random-walk upwards. A layer that feeds a normalisation layer reaches the loss
only through its direction, and that growth shrinks its effective step (∝ 1/‖W‖²): such
networks anneal by themselves and take the longer self-estimated steps well. A network without
normalisation has no such brake, and the walk ends in loss spikes unless ``G`` is estimated
without the noise bias (``docs/agd-stability.md`` §2, §4, §7).
"""
from __future__ import annotations

import dataclasses

__all__ = ["Preset", "PRESETS", "AUTO", "DEFAULT_PRESET", "get_preset", "choose_preset",
           "list_presets"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One update rule of AGD (see the module docstring for the fields)."""

    name: str
    family: str = "frobenius"
    momentum: float = 0.0
    retract: str | None = None
    estimate: str = "self"
    description: str = ""

    def __post_init__(self) -> None:
        if self.family not in ("frobenius", "spectral"):
            raise ValueError(f"preset {self.name!r}: family must be 'frobenius' or 'spectral', "
                             f"got {self.family!r}")
        if isinstance(self.momentum, bool) or not (0.0 <= float(self.momentum) < 1.0):
            raise ValueError(f"preset {self.name!r}: momentum must be in [0, 1), got "
                             f"{self.momentum!r}")
        if self.retract not in (None, "sphere", "ball"):
            raise ValueError(f"preset {self.name!r}: retract must be None, 'sphere' or 'ball', "
                             f"got {self.retract!r}")
        if self.estimate not in ("self", "fresh"):
            raise ValueError(f"preset {self.name!r}: estimate must be 'self' or 'fresh', got "
                             f"{self.estimate!r}")
        if self.estimate == "fresh" and not self.momentum:
            raise ValueError(f"preset {self.name!r}: estimate='fresh' needs momentum > 0 (the "
                             "direction comes from the momentum of the previous steps)")


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("paper", "frobenius", description="the AGD paper's rule (Bernstein et al. 2023)"),
    Preset("spectral", "spectral",
           description="exact duality maps: orthogonalised matrices (Newton-Schulz), sign gains"),
    Preset("spectral-momentum", "spectral", momentum=0.95,
           description="spectral with momentum 0.95 on the gradient"),
    Preset("spectral-sphere", "spectral", momentum=0.95, retract="sphere",
           description="spectral with momentum, weights kept on their init sphere"),
    Preset("paper-momentum", "frobenius", momentum=0.95,
           description="the paper's rule with momentum 0.95 (ablation)"),
    Preset("spectral-fresh", "spectral", momentum=0.95, estimate="fresh",
           description="spectral with momentum; G estimated without noise bias from the fresh "
                       "gradient against the previous momentum's direction"),
)}

#: The name that chooses a preset by the network's structure (:func:`choose_preset`).
AUTO = "auto"
#: What ``"auto"`` chooses: {network has a normalisation layer: preset name}.
AUTO_CHOICE: dict[bool, str] = {True: "spectral-momentum", False: "spectral-fresh"}

#: The preset ``AGD()`` uses when none is given (the race of docs/race.md decides it).
DEFAULT_PRESET = AUTO


def get_preset(name: str | Preset) -> Preset:
    """The registered preset ``name`` (a :class:`Preset` is returned as is)."""
    if isinstance(name, Preset):
        return name
    key = str(name).strip().lower()
    if key == AUTO:
        raise ValueError(f"AGD preset {AUTO!r} is chosen from the network: use "
                         f"choose_preset({AUTO!r}, normalised=...) or build AGD(model)")
    try:
        return PRESETS[key]
    except KeyError:
        raise ValueError(f"unknown AGD preset {name!r}; choose one of "
                         f"{', '.join([AUTO, *PRESETS])}") from None


def choose_preset(name: str | Preset, *, normalised: bool) -> Preset:
    """``name``'s preset; for ``"auto"``, :data:`AUTO_CHOICE` of ``normalised`` (whether the
    network has a normalisation layer, :func:`hyperfree.optim.kinds.is_normalised`)."""
    if isinstance(name, str) and name.strip().lower() == AUTO:
        return PRESETS[AUTO_CHOICE[bool(normalised)]]
    return get_preset(name)


def list_presets() -> list[str]:
    """Names of the registered presets, in registration order."""
    return list(PRESETS)
