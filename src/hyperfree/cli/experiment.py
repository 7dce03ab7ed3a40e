"""``hyperfree experiment NAME``: run a registered experiment of the suite, resumably.

Every run goes to ``<runs-dir>/experiments/NAME/<profile>/<label>-seed<k>/`` (the ``hyperfree
train`` layout plus ``experiment.json``); finished runs are skipped and half-finished ones
resume from their checkpoint, so an interrupted suite continues where it stopped when the same
command is run again. ``NAME`` may be ``all``: every experiment whose ``in_all`` is set (the
race of issue 9 is not: it takes far longer than the rest, so it runs only by name). Ctrl-C
stops at the next step boundary.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

from ._runtime import EXIT_SIGNAL, add_threads_flag, set_threads, stop_on_ctrl_c

__all__ = ["add_arguments", "run", "parse_data_dirs", "experiment_names"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the ``experiment`` flags."""
    from hyperfree.experiments import PROFILES, list_experiments

    p.add_argument("name", choices=[*list_experiments(), "all"],
                   help="the experiment to run, or 'all' for the whole suite in order "
                        "(without 'race', which is run by name)")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="quick = minutes on a CPU (default); full = hours, 3 seeds; gpu = the "
                        "papers' CIFAR/ImageNet scale; smoke = a few batches (tests)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per run (default: the profile's, 1 for quick, 3 for full/gpu)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda if available else cpu (default)")
    p.add_argument("--runs-dir", default="runs", metavar="DIR",
                   help="root of the run directories (default runs)")
    add_threads_flag(p)
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="run only the runs whose label, group or panel matches PATTERN "
                        "(fnmatch, repeatable), e.g. --only gpt --only 'fcn16-agd-*'")
    p.add_argument("--data-dir", action="append", default=[], metavar="[DATASET=]PATH",
                   help="where a dataset lives, e.g. cifar10=/data/cifar or "
                        "tinyshakespeare=/path/file.txt; a bare PATH applies to every "
                        "non-vendored dataset (repeatable)")


def parse_data_dirs(items: list[str]) -> dict[str, str]:
    """``["cifar10=/d", "/x"]`` -> ``{"cifar10": "/d", "": "/x"}`` (ValueError if repeated)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        key, value = (name.strip(), path) if sep else ("", item)
        if not value:
            raise ValueError(f"--data-dir {item!r} has no path; write DATASET=PATH or PATH")
        if key in out:
            raise ValueError(f"--data-dir for {key or 'every dataset'!r} given twice; keep one")
        out[key] = value
    return out


def experiment_names(name: str) -> list[str]:
    """``[name]``, or for ``all`` every registered experiment whose ``in_all`` is set."""
    from hyperfree.experiments import get_experiment, list_experiments

    if name != "all":
        return [name]
    return [n for n in list_experiments() if get_experiment(n).in_all]


def run(args: argparse.Namespace) -> int:
    """Run the experiment(s); print one line per run. Exit 0, 2 (user error) or 130 (Ctrl-C)."""
    from hyperfree.experiments import DataCache, get_experiment, plan_runs, run_experiment

    names = experiment_names(args.name)
    data_dirs = parse_data_dirs(args.data_dir)
    set_threads(args.threads)
    for name in names:  # a missing input (no --data-dir for a text file) fails before any run
        plan_runs(get_experiment(name), args.profile, seeds=args.seeds, runs_dir=args.runs_dir,
                  device=args.device, data_dirs=data_dirs, only=args.only)
    cache = DataCache()
    t0 = time.perf_counter()
    try:
        with stop_on_ctrl_c() as stop:
            for i, name in enumerate(names, start=1):
                if len(names) > 1:
                    print(f"== experiment {i}/{len(names)}: {name} ({args.profile}) ==",
                          flush=True)
                run_experiment(name, args.profile, seeds=args.seeds, runs_dir=args.runs_dir,
                               device=args.device, data_dirs=data_dirs, cache=cache,
                               callbacks=[stop], log=lambda line: print(line, flush=True),
                               only=args.only)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume (finished runs are kept)",
              file=sys.stderr)
        return EXIT_SIGNAL.get(stop.signum or signal.SIGINT, 130)
    print(f"done: {', '.join(names)} ({args.profile}) in {time.perf_counter() - t0:.0f}s; "
          f"runs under {args.runs_dir}/experiments/. Next: hyperfree report")
    return 0
