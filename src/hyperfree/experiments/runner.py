"""Run a registered experiment: every (run, seed) into its own run directory, resumably.

.. code-block:: text

    plan  = [(spec, seed) for spec in experiment.specs(profile) for seed in range(seeds)]
    for k, (spec, seed) in enumerate(plan):      # runs/experiments/<exp>/<profile>/<label>-seed<k>
        finished (all epochs or steps, diverged) -> skip
        checkpoint.pt present                    -> train(cfg, resume=True)   (harness resume)
        otherwise                                -> train(cfg)
        print "[k/N] label seed s ... ETA mm:ss" (ETA = mean wall time of runs done × runs left)

Runs that share a dataset share one loaded :class:`~hyperfree.data.DataBundle` (a
:class:`DataCache` lives for one :func:`run_experiment` call, or longer if the caller passes
one). Next to the harness's files each run directory gets ``experiment.json``: the experiment,
profile, label, group, coordinates, seed, wall time and CPU, which the report reads. A run that
diverges (:class:`~hyperfree.train.TrainingDiverged`) is a result, not a failure of the suite:
its ``experiment.json`` carries ``"diverged"`` (the message) and the report shows it so.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hyperfree.data import get_dataset_info
from hyperfree.train import (CHECKPOINT_NAME, METRICS_NAME, TrainConfig, TrainingDiverged,
                             read_metrics, train)
from hyperfree.train.config import RESUME_FIXED_FIELDS, config_difference

from ._spec import PROFILE_SEEDS, Experiment, RunSpec, get_experiment

__all__ = ["RUN_INFO_NAME", "DataCache", "PlannedRun", "plan_runs", "run_experiment",
           "is_finished", "cpu_name", "format_eta"]

RUN_INFO_NAME = "experiment.json"
_VENDORED = ("fashion-mnist",)
# Settings every suite run shares: the harness's per-run bar would drown the suite's lines, and
# the report draws the figures (a per-run figure.png costs about a second each).
_SUITE_DEFAULTS: Mapping[str, Any] = {"progress": False, "plots": False}


class DataCache:
    """Loaded datasets keyed by (name, data_dir, device, text window length): each is loaded
    once per cache."""

    def __init__(self) -> None:
        self._bundles: dict[tuple[str, str | None, str, Any], Any] = {}

    def get(self, cfg: TrainConfig) -> Any:
        """The DataBundle ``train(cfg)`` would load, loaded at most once."""
        from hyperfree.train import load_data, model_flags, resolve_device

        device = resolve_device(cfg.device)
        key = (cfg.dataset, cfg.data_dir, str(device), model_flags(cfg).get("seq_len"))
        if key not in self._bundles:
            self._bundles[key] = load_data(cfg, device)
        return self._bundles[key]

    def __len__(self) -> int:
        return len(self._bundles)


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One (run, seed) of a plan: its spec, seed, directory and resolved config."""

    spec: RunSpec
    seed: int
    run_dir: Path
    config: TrainConfig


def _data_dir(dataset: str, given: str | None, data_dirs: Mapping[str, str]) -> str | None:
    if dataset in data_dirs:
        return data_dirs[dataset]
    if "" in data_dirs and dataset not in _VENDORED:
        return data_dirs[""]
    return given


def plan_runs(exp: Experiment, profile: str, *, seeds: int | None = None,
              runs_dir: str | os.PathLike[str] = "runs", device: str = "auto",
              data_dirs: Mapping[str, str] | None = None,
              only: Sequence[str] = ()) -> list[PlannedRun]:
    """Every (run, seed) of ``exp`` under ``profile``, with its run dir and TrainConfig.

    ``seeds`` defaults to the profile's (:data:`PROFILE_SEEDS`); ``data_dirs`` maps a dataset
    name to its folder/file (key ``""``: every non-vendored dataset). A text dataset has no
    default location: without its entry this raises a one-line ValueError naming the flag.
    ``only`` keeps the runs whose label, group or panel matches one of its ``fnmatch``
    patterns (e.g. ``["gpt", "fcn16-agd-*"]``); a pattern that matches nothing is an error.
    An ``init_from`` override ``"@LABEL"`` names another run of the experiment (a fine-tuning
    run's pre-training): it becomes that run's directory for the same seed, and the run it
    names is planned first, also when ``only`` leaves it out.
    """
    n_seeds = PROFILE_SEEDS[profile] if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    root = Path(runs_dir) / "experiments" / exp.name / profile
    plan = []
    for spec in select_specs(exp.specs(profile), only, f"{exp.name} ({profile})"):
        for seed in range(n_seeds):
            fields = {**_SUITE_DEFAULTS, **spec.overrides}
            dataset = str(fields.get("dataset", "fashion-mnist"))
            fields["data_dir"] = _data_dir(dataset, fields.get("data_dir"), data_dirs or {})
            if fields["data_dir"] is None and get_dataset_info(dataset).kind == "text":
                raise ValueError(f"experiment {exp.name!r} ({profile}) needs a text file for "
                                 f"{dataset}: pass --data-dir {dataset}=PATH "
                                 f"(data_dirs={{{dataset!r}: PATH}})")
            run_dir = root / f"{spec.label}-seed{seed}"
            source = fields.get("init_from")
            if isinstance(source, str) and source.startswith("@"):
                fields["init_from"] = str(root / f"{source[1:]}-seed{seed}")
            cfg = TrainConfig(**fields).replace(seed=seed, device=device, out_dir=str(run_dir))
            plan.append(PlannedRun(spec, seed, run_dir, cfg))
    return plan


def select_specs(specs: Sequence[RunSpec], only: Sequence[str], where: str
                 ) -> list[RunSpec]:
    """The specs whose label, group or panel matches a pattern of ``only`` (all if empty)."""
    if not only:
        return list(specs)
    keep = []
    for pattern in only:
        hits = [s for s in specs if any(fnmatch.fnmatchcase(v, pattern)
                                        for v in (s.label, s.group, s.panel))]
        if not hits:
            raise ValueError(f"--only {pattern!r} matches no run of {where}; runs are named "
                             f"like {specs[0].label!r} (label, group or panel)")
        keep += [s for s in hits if s not in keep]
    labels = {s.label: s for s in specs}
    for s in list(keep):  # a fine-tuning run needs the run it starts from
        source = s.overrides.get("init_from")
        if isinstance(source, str) and source.startswith("@"):
            if source[1:] not in labels:
                raise ValueError(f"run {s.label!r} starts from {source!r}, which is no run of "
                                 f"{where}")
            if labels[source[1:]] not in keep:
                keep.append(labels[source[1:]])
    return [s for s in specs if s in keep]


def is_finished(run_dir: Path, cfg: TrainConfig) -> bool:
    """True if ``run_dir`` holds ``cfg``'s run with all ``cfg.epochs`` epochs (or, for a run
    counted in steps, its last record at ``cfg.steps``) recorded, or a record that it diverged.

    Raises ValueError if it holds a different run (another optimiser, model, ...).
    """
    metrics, config = run_dir / METRICS_NAME, run_dir / "config.json"
    if not metrics.is_file() or not config.is_file():
        return False
    stored = json.loads(config.read_text())["config"]
    diff = config_difference(stored, cfg, (*RESUME_FIXED_FIELDS, "epochs", "steps"))
    if diff is not None:
        name, old, new = diff
        raise ValueError(f"{run_dir} holds a run with {name}={old!r}, not {new!r}; delete it "
                         "or pick another --runs-dir")
    info = run_dir / RUN_INFO_NAME
    if info.is_file() and json.loads(info.read_text()).get("diverged"):
        return True
    lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
    if cfg.steps is not None:
        return bool(lines) and int(json.loads(lines[-1]).get("step", 0)) >= cfg.steps
    return len(lines) >= cfg.epochs


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()`` or "unknown"."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_eta(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60:02d}:{s % 60:02d}"


def _write_info(run: PlannedRun, exp: Experiment, profile: str, wall: float,
                diverged: str | None = None) -> None:
    info = {"experiment": exp.name, "profile": profile, "label": run.spec.label,
            "group": run.spec.group, "panel": run.spec.panel, "x": run.spec.x, "y": run.spec.y,
            "seed": run.seed, "wall_seconds": wall, "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), **({"diverged": diverged} if diverged else {})}
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / RUN_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")


def _load_all(cache: DataCache, plan: Sequence[PlannedRun], what: str) -> None:
    """Load every dataset of ``plan`` now, so missing data fails before any run starts."""
    from hyperfree.data import DataError

    for run in plan:
        try:
            cache.get(run.config)
        except DataError as err:
            name = run.config.dataset
            raise DataError(f"{what} needs {name}: {str(err).splitlines()[0]} (CLI: --data-dir "
                            f"{name}=PATH)") from None


def _summary(records: Sequence[dict[str, Any]], metric: str) -> str:
    if not records:
        return ""
    last = records[-1]
    shown = (f"test loss {last['test_loss']:.4g}" if metric == "test_loss"
             else f"test acc {last['test_acc']:.1%}")
    return f"train loss {last['train_loss']:.4g}, {shown}"


def run_experiment(name: str | Experiment, profile: str = "quick", *, seeds: int | None = None,
                   runs_dir: str | os.PathLike[str] = "runs", device: str = "auto",
                   data_dirs: Mapping[str, str] | None = None, cache: DataCache | None = None,
                   callbacks: Sequence[Any] = (), log: Callable[[str], None] | None = None,
                   only: Sequence[str] = ()) -> list[Path]:
    """Run experiment ``name`` (or an unregistered :class:`Experiment`) under ``profile``.

    Returns the run directories, in plan order.

    Finished runs are skipped, half-finished ones resumed from their checkpoint. ``log``
    receives one line per run (``[k/N] label seed s ... ETA mm:ss``). All datasets are loaded
    (once) before the first run, so missing data fails fast with the loader's error.
    ``callbacks`` go to every ``train`` call (e.g. a StopFlag for Ctrl-C); ``only`` restricts
    the plan as in :func:`plan_runs`.
    """
    exp = name if isinstance(name, Experiment) else get_experiment(name)
    plan = plan_runs(exp, profile, seeds=seeds, runs_dir=runs_dir, device=device,
                     data_dirs=data_dirs, only=only)
    cache = cache if cache is not None else DataCache()
    _load_all(cache, plan, f"{exp.name} ({profile})")
    emit = log or (lambda line: None)
    done_walls: list[float] = []
    todo = [r for r in plan if not is_finished(r.run_dir, r.config)]
    for run in plan:  # finished, but stopped before its experiment.json was written
        if run not in todo and not (run.run_dir / RUN_INFO_NAME).is_file():
            records = read_metrics(run.run_dir)
            _write_info(run, exp, profile, sum(float(r.get("seconds", 0.0)) for r in records))
    skipped = len(plan) - len(todo)
    if skipped:
        emit(f"{exp.name}/{profile}: {skipped} of {len(plan)} runs already finished, skipped")
    for k, run in enumerate(todo, start=skipped + 1):
        eta = "--:--" if not done_walls else format_eta(
            sum(done_walls) / len(done_walls) * (len(plan) - k + 1))
        resume = (run.run_dir / CHECKPOINT_NAME).is_file()
        emit(f"[{k}/{len(plan)}] {exp.name} {run.spec.label} seed {run.seed}"
             f"{' (resuming)' if resume else ''} ... ETA {eta}")
        t0 = time.perf_counter()
        diverged = None
        try:
            history = train(run.config.replace(resume=resume), data=cache.get(run.config),
                            callbacks=callbacks)
            summary = _summary(history.records, exp.metric(run.spec.panel)[0])
        except TrainingDiverged as exc:
            diverged = summary = str(exc)
        wall = time.perf_counter() - t0
        done_walls.append(wall)
        _write_info(run, exp, profile, wall, diverged)
        emit(f"[{k}/{len(plan)}] {run.spec.label} seed {run.seed}: {summary} in {wall:.1f}s")
    return [r.run_dir for r in plan]
