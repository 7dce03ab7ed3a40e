"""Run a ``hyperfree`` command with AGD's orthogonalisation on another Newton–Schulz schedule: the
prototype of a change of the default, for the race's before/after quality check.

    .venv/bin/python benchmarks/race_ns_schedule.py --schedule ns4 -- \\
        experiment race --profile quick --seeds 3 --device cpu --threads 1 \\
        --runs-dir /tmp/race19-ns4 --only fcn16-agd-auto --only conv-agd-auto

``--schedule``: ``jordan`` (today's default, 5 steps: a control), ``ns4``
(:data:`~hyperfree.optim.newton_schulz.NS4_SCHEDULE`, 4 steps) or ``polar-express``
(:data:`~hyperfree.optim.newton_schulz.POLAR_EXPRESS`, 5 steps). Every call the optimiser makes,
``orthogonalize(mats, steps=ns_steps, dtype=...)``, is answered with the schedule's
coefficients and step count instead (the ``steps`` it passes is ignored); dtypes are unchanged.
The optimiser itself is not modified: its modules' reference to ``orthogonalize`` is replaced
in this process only (``_race_workloads.using_schedule``), and the command runs in-process.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _race_workloads as W  # noqa: E402

import hyperfree.cli  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", choices=list(W.SCHEDULES), required=True,
                    help="the Newton-Schulz schedule AGD's steps will use")
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="the hyperfree command line, after --")
    args = ap.parse_args()
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    with W.using_schedule(args.schedule):
        print(f"# orthogonalize -> schedule {args.schedule!r} "
              f"({W.SCHEDULES[args.schedule][1]} steps)", file=sys.stderr)
        return hyperfree.cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
