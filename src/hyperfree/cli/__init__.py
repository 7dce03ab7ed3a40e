"""The ``hyperfree`` command: a thin argparse layer over the library.

Subcommands are pluggable: :data:`SUBCOMMANDS` maps a name to ``(add_arguments, run)`` (an
optional third item is the one-line help), where ``add_arguments(parser)`` declares the flags
and ``run(args) -> int`` does the work and returns the exit status. Register more with
:func:`register_subcommand` (one file per subcommand, e.g. ``cli/train.py``).

User mistakes (bad flags, bad data, a missing run directory, a directory that cannot be
written, a model too large for the memory) print ONE line on stderr and exit with status 2,
without a traceback: argparse errors via :class:`OneLineParser`, and ``ValueError`` (incl.
``DataError``, ``CheckpointError``) / ``OSError`` raised by the library via :func:`main`. The
library names its settings as Python does (``data_dir=``, ``train_bs``); :func:`main` says
them as the command's flags (``--data-dir``, ``--train-bs``; :mod:`._messages`). Ctrl-C before
a command has started (importing torch takes seconds) is one line and status 130, and warnings
are shown as one line each.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Callable, NoReturn, Sequence, Union

from . import _messages
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
        child.set_defaults(_run=run, _flags=_messages.flag_table(child))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hyperfree`` console script; returns the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return _dispatch(args)
    except KeyboardInterrupt:
        print("\nhyperfree: interrupted before anything was written", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    flags = getattr(args, "_flags", {})
    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = _one_line_warning
        try:
            return int(args._run(args))
        except (ValueError, OSError) as err:
            message = _messages.first_line(err)
            print(f"hyperfree {args.command}: error: {_messages.as_flags(message, flags)}",
                  file=sys.stderr)
            return 2


def _one_line_warning(message: Any, category: type, filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    text = str(message).splitlines()[0] if str(message) else category.__name__
    print(f"hyperfree: warning: {text}", file=file if file is not None else sys.stderr)
