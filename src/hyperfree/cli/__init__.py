"""The ``hyperfree`` command: a thin argparse layer over the library.

Subcommands are pluggable: :data:`SUBCOMMANDS` maps a name to ``(add_arguments, run)`` (an
optional third item is the one-line help), where ``add_arguments(parser)`` declares the flags
and ``run(args) -> int`` does the work and returns the exit status. Register more with
:func:`register_subcommand` (one file per subcommand, e.g. ``cli/train.py``).

User mistakes (bad flags, bad data, a missing run directory) print ONE line on stderr and exit
with status 2, without a traceback: argparse errors via :class:`OneLineParser`, and
``ValueError`` (incl. ``DataError``, ``CheckpointError``) / ``FileNotFoundError`` raised by the
library via :func:`main`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence, Union

from . import experiment as _experiment
from . import plot as _plot
from . import report as _report
from . import train as _train

__all__ = ["AddArguments", "Run", "Entry", "SUBCOMMANDS", "OneLineParser", "register_subcommand",
           "build_parser", "main"]

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
Entry = Union[tuple[AddArguments, Run], tuple[AddArguments, Run, str]]

SUBCOMMANDS: dict[str, Entry] = {
    "train": (_train.add_arguments, _train.run, "train a model (default: FCN + AGD on "
              "Fashion-MNIST, ~2 min on a CPU)"),
    "plot": (_plot.add_arguments, _plot.run, "draw Figure-4-style panels of one or more runs"),
    "experiment": (_experiment.add_arguments, _experiment.run,
                   "run a registered experiment (depth, tuned, shape, batch, conv, towers, "
                   "peers, race; all = every one but race)"),
    "report": (_report.add_arguments, _report.run,
               "regenerate docs/results.md (and docs/race.md) and the figures from the run "
               "directories"),
}


def register_subcommand(name: str, add_arguments: AddArguments, run: Run, help: str = ""
                        ) -> None:
    """Add ``hyperfree NAME`` (ValueError if the name is taken)."""
    if name in SUBCOMMANDS:
        raise ValueError(f"subcommand {name!r} is already registered; pick another name")
    SUBCOMMANDS[name] = (add_arguments, run, help) if help else (add_arguments, run)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> OneLineParser:
    """The top-level parser with one sub-parser per entry of :data:`SUBCOMMANDS`."""
    parser = OneLineParser(prog="hyperfree",
                           description="Deep learning without hyperparameters: AGD and "
                                       "hypergradient optimiser towers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in SUBCOMMANDS.items():
        add_arguments, run = entry[0], entry[1]
        text = entry[2] if len(entry) == 3 else (run.__doc__ or "").split("\n")[0]
        child = sub.add_parser(name, help=text, description=text)
        add_arguments(child)
        child.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hyperfree`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except (ValueError, FileNotFoundError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"hyperfree {args.command}: error: {message}", file=sys.stderr)
        return 2
