"""``hyperfree plot RUN_DIR [RUN_DIR ...] [--out FILE]``: overlay runs in one figure.

Panels as in the AGD paper's Figure 4 (see :mod:`hyperfree.train.plots`); the legend names each
run by its directory. Default output: ``RUN_DIR/figure.png`` for one run, ``comparison.png`` in
the current directory for several.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the ``plot`` arguments."""
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories written by `hyperfree train` (metrics.jsonl inside)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="PNG to write (default RUN_DIR/figure.png, or comparison.png for several)")


def run(args: argparse.Namespace) -> int:
    """Draw the figure and print its path."""
    from hyperfree.train import FIGURE_NAME, plot_runs

    for d in args.runs:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"{d} is not a directory; pass run directories written by "
                                    "`hyperfree train`")
    default = Path(args.runs[0]) / FIGURE_NAME if len(args.runs) == 1 else Path("comparison.png")
    out = plot_runs(args.runs, args.out if args.out is not None else default)
    print(f"figure written to {out}")
    return 0
