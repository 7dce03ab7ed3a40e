"""Experiments as data: :class:`RunSpec`, :class:`Experiment` and their registry.

An experiment is a frozen record: its name, the paper's claim, which figure the report draws,
and per *profile* (``smoke``, ``quick``, ``full``, ``gpu``) the tuple of runs it consists of.
A run is a set of :class:`~hyperfree.train.TrainConfig` overrides plus where it sits in the
figure: its ``group`` (a series, e.g. ``"adam"``), its sweep coordinate ``x`` (e.g. the
learning rate) and its ``panel`` (e.g. the model). Seeds multiply every run.
"""
from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from hyperfree._registry import Registry

__all__ = ["PROFILES", "PROFILE_SEEDS", "FIGURE_KINDS", "DEFAULT_METRIC", "RunSpec", "Row",
           "Verdict", "Experiment", "register_experiment", "get_experiment", "list_experiments"]

PROFILES: tuple[str, ...] = ("smoke", "quick", "full", "gpu")
PROFILE_SEEDS: Mapping[str, int] = MappingProxyType({"smoke": 1, "quick": 1, "full": 3,
                                                     "gpu": 3})
FIGURE_KINDS: tuple[str, ...] = ("curves", "sweep", "heatmap", "bars")
#: (final-epoch metric key, higher is better) of a panel that names none: test accuracy
DEFAULT_METRIC: tuple[str, bool] = ("test_acc", True)
_METRIC_KEYS = ("test_acc", "test_loss", "train_acc", "train_loss")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of an experiment (before seeds): TrainConfig ``overrides`` and its place.

    ``label`` names the run directory (``<label>-seed<k>``) and must be filename-safe;
    ``group`` is the series, ``x`` the sweep coordinate (learning rate, batch size, width),
    ``y`` a second coordinate (depth, for heatmaps) and ``panel`` the sub-figure.
    """

    label: str
    group: str
    overrides: Mapping[str, Any]
    x: float | None = None
    y: float | None = None
    panel: str = ""

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise ValueError(f"run label {self.label!r} must be filename-safe "
                             "(letters, digits, '.', '_', '-')")
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))


@dataclasses.dataclass(frozen=True)
class Row:
    """One run label's results aggregated over seeds (what verdicts and tables read)."""

    label: str
    group: str
    panel: str
    x: float | None
    y: float | None
    n: int
    metrics: Mapping[str, tuple[float, float]]  # name -> (mean, std) of the final epoch
    seconds: float  # mean wall time of one seed
    #: name -> ((step, mean over seeds), ...) at every evaluation all seeds recorded, in step
    #: order (empty when a seed diverged); what time-to-result reads
    curves: Mapping[str, tuple[tuple[int, float], ...]] = dataclasses.field(
        default_factory=dict)

    def mean(self, name: str) -> float:
        """Mean over seeds of final-epoch metric ``name`` (NaN if never recorded)."""
        return self.metrics.get(name, (float("nan"), float("nan")))[0]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a claim reproduced: ``status`` (yes / partly / no / n/a) and why, in words.

    ``details`` are optional Markdown lines (e.g. a table of margins) that an experiment's own
    page shows under the verdict (:attr:`Experiment.page`).
    """

    status: str
    text: str
    details: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    ``runs[profile]`` is the tuple of :class:`RunSpec` of that profile; ``figure`` is one of
    :data:`FIGURE_KINDS` (``curves``: accuracy and objective per epoch; ``sweep``: final
    metric against ``x``; ``heatmap``: final metric over ``x`` × ``y``; ``bars``: final
    metric per group). ``verdict(rows)`` compares the measured rows with the claim.

    ``metrics`` maps a panel to the final-epoch number it is judged by, ``(key,
    higher_is_better)``; a panel it does not name uses :data:`DEFAULT_METRIC` (test accuracy).
    ``in_all`` says whether ``hyperfree experiment all`` runs it. ``page`` asks the report for
    a page of its own (``<name>.md`` beside the results): per panel a table of every run with
    the panel's metric and a figure; ``cost_unit`` names the group whose run is the unit in
    which that page states each grid's compute (``None``: no compute column).
    """

    name: str
    title: str
    claim: str
    figure: str
    runs: Mapping[str, tuple[RunSpec, ...]]
    verdict: Callable[[Sequence[Row]], Verdict]
    x_label: str = ""
    y_label: str = ""
    log_x: bool = False
    notes: str = ""
    rel_update_table: bool = False  # list each group's best ‖ΔW‖/‖W‖ per epoch in the report
    metrics: Mapping[str, tuple[str, bool]] = dataclasses.field(default_factory=dict)
    in_all: bool = True
    page: bool = False
    cost_unit: str | None = None

    def __post_init__(self) -> None:
        if self.figure not in FIGURE_KINDS:
            raise ValueError(f"figure {self.figure!r} of {self.name!r} is not one of "
                             f"{', '.join(FIGURE_KINDS)}")
        for panel, (key, _) in self.metrics.items():
            if key not in _METRIC_KEYS:
                raise ValueError(f"metric {key!r} of panel {panel!r} of {self.name!r} is not "
                                 f"one of {', '.join(_METRIC_KEYS)}")
        for profile, specs in self.runs.items():
            if profile not in PROFILES:
                raise ValueError(f"profile {profile!r} of {self.name!r} is not one of "
                                 f"{', '.join(PROFILES)}")
            labels = [s.label for s in specs]
            if len(set(labels)) != len(labels):
                raise ValueError(f"{self.name!r} profile {profile!r} repeats a run label")
        object.__setattr__(self, "runs", MappingProxyType({k: tuple(v)
                                                           for k, v in self.runs.items()}))
        object.__setattr__(self, "metrics", MappingProxyType(
            {k: (str(key), bool(up)) for k, (key, up) in self.metrics.items()}))

    def metric(self, panel: str = "") -> tuple[str, bool]:
        """``(key, higher_is_better)`` of the number ``panel`` is judged by."""
        return self.metrics.get(panel, DEFAULT_METRIC)

    def specs(self, profile: str) -> tuple[RunSpec, ...]:
        """The runs of ``profile``; ValueError naming the profiles it has if none."""
        if profile not in self.runs:
            raise ValueError(f"experiment {self.name!r} has no profile {profile!r}; choose one "
                             f"of {', '.join(self.runs)}")
        return self.runs[profile]


_REGISTRY: Registry[Experiment] = Registry("experiment")


def register_experiment(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry (ValueError if another experiment has its name)."""
    return _REGISTRY.register(exp.name, exp)


def list_experiments() -> list[str]:
    """Names of the registered experiments, in registration order."""
    return _REGISTRY.names()


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``; ValueError listing the choices if none."""
    return _REGISTRY.get(name)
