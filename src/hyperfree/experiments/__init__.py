"""The experiment suite: registered experiments, a resumable runner and the results report.

>>> from hyperfree.experiments import list_experiments, run_experiment, write_report
>>> list_experiments()  # doctest: +SKIP
['depth', 'tuned', 'shape', 'batch', 'conv', 'towers', 'peers', 'race']
>>> run_experiment("depth", "quick", log=print)  # doctest: +SKIP
>>> write_report("runs", "docs/results.md")  # doctest: +SKIP

Modules: _spec (RunSpec, Experiment, registry), suite (the seven experiments of issue 5),
race (issue 9's race of the AGD presets), _race_verdict (its verdict), _verdicts (did the claim
reproduce?), runner (plan, resume, progress), collect (read runs back), figures, page (an
experiment's own page: per-panel tables and figures), report (docs/results.md).
"""
from . import race, suite  # noqa: F401  (register the experiments: suite's seven, then race)
from ._spec import (FIGURE_KINDS, PROFILE_SEEDS, PROFILES, Experiment, Row, RunSpec, Verdict,
                    get_experiment, list_experiments, register_experiment)
from .collect import RunResult, aggregate, load_runs
from .report import write_report
from .runner import DataCache, PlannedRun, is_finished, plan_runs, run_experiment

__all__ = ["FIGURE_KINDS", "PROFILE_SEEDS", "PROFILES", "Experiment", "Row", "RunSpec",
           "Verdict", "get_experiment", "list_experiments", "register_experiment", "RunResult",
           "aggregate", "load_runs", "write_report", "DataCache", "PlannedRun", "is_finished",
           "plan_runs", "run_experiment"]
