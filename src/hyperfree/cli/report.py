"""``hyperfree report``: regenerate docs/results.md and docs/figures/*.png from the run dirs."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the ``report`` flags."""
    from hyperfree.experiments import PROFILES, list_experiments

    p.add_argument("--runs-dir", default="runs", metavar="DIR",
                   help="root of the run directories (default runs)")
    p.add_argument("--out", default="docs/results.md", metavar="FILE",
                   help="the Markdown report to write (default docs/results.md)")
    p.add_argument("--figures-dir", default=None, metavar="DIR",
                   help="where the PNGs go (default: figures/ next to --out)")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="report this profile (default: per experiment, the largest one run)")
    p.add_argument("--experiment", action="append", choices=list_experiments(), default=None,
                   dest="experiments", metavar="NAME",
                   help="only these experiments (repeatable; default all)")


def run(args: argparse.Namespace) -> int:
    """Write the report; print its path."""
    from hyperfree.experiments import write_report

    out = write_report(args.runs_dir, args.out, figures_dir=args.figures_dir,
                       profile=args.profile, experiments=args.experiments)
    print(f"wrote {out}")
    return 0
