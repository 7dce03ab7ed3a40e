"""Pluggable subcommands: an entry added to SUBCOMMANDS is parsed and dispatched by main(), its
ValueError becomes a one-line exit-2 error, and names cannot be registered twice."""
from __future__ import annotations

import argparse

import pytest

from hyperfree import cli


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--times", type=int, required=True, help="how many")


def _run(args: argparse.Namespace) -> int:
    """Say hello (test subcommand)."""
    if args.times < 0:
        raise ValueError(f"--times must be >= 0, got {args.times}")
    print("hello " * args.times)
    return 7


def test_added_subcommand_is_dispatched(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "hello", (_add, _run))
    assert cli.main(["hello", "--times", "2"]) == 7
    assert capsys.readouterr().out.count("hello") == 2
    assert cli.main(["hello", "--times", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "hyperfree hello: error: --times must be >= 0, got -1\n"


def test_names_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="'train' is already registered"):
        cli.register_subcommand("train", _add, _run)
