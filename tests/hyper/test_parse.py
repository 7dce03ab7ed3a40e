"""``hyper.parse``: stacks from text (top-down), printable round-trip, and pointed errors.

Checks that the parsed stack has the right classes, order and values, that
``parse(repr(stack))`` reproduces ``repr``, and that each kind of bad text raises
``StackSyntaxError`` (a ``ValueError``) at the column of the offending token.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_parse.py``
"""
from __future__ import annotations

import pytest

from hyperfree import hyper


def test_parse_builds_top_down_stack() -> None:
    stack = hyper.parse("Adam(1e-3) / SGD(1e-5)")
    assert isinstance(stack, hyper.Adam) and isinstance(stack.optimizer, hyper.SGD)
    assert stack.lr == 1e-3 and stack.optimizer.lr == 1e-5 and stack.optimizer.optimizer is None
    assert repr(stack) == "adam(lr=0.001) / sgd(lr=1e-05)"


def test_parse_keywords_and_pairs() -> None:
    stack = hyper.parse("adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6)/rmsprop(alpha=0.9)/sgd")
    assert stack.betas == (0.8, 0.99) and stack.eps == 1e-6
    assert stack.optimizer.alpha == 0.9 and stack.optimizer.lr == 0.01
    assert [type(level) for level in stack.levels()] == [hyper.Adam, hyper.RMSProp, hyper.SGD]


@pytest.mark.parametrize("text", [
    "sgd(0.01)", "sgd(0.01, 0.9)/sgd(1e-4)", "adam(0.001, (0.5, 0.9))/adam(1e-3)/sgd(1e-5)",
    "sgdperparam/adagrad(0.1, 1e-8)", "rmsproplr(0.02, 0.5)/adamlr(1e-4)", "rmsprop/sgd(0)",
])
def test_repr_round_trip(text: str) -> None:
    stack = hyper.parse(text)
    again = hyper.parse(repr(stack))
    assert repr(again) == repr(stack)
    assert [(type(a), a._config()) for a in again.levels()] == \
        [(type(b), b._config()) for b in stack.levels()]


@pytest.mark.parametrize("text,column,words", [
    ("adm(1e-3)/sgd", 0, "unknown optimiser 'adm'"),
    ("sgd(0.01)/sgdd", 10, "unknown optimiser 'sgdd'"),
    ("sgd(0.01", 8, "expected"),
    ("sgd(0.01) sgd", 10, "expected '/' or end"),
    ("sgd(lr=0.1, mom=0.9)", 12, "no argument 'mom'"),
    ("sgd(0.1, 0.5, 3)", 14, "too many arguments"),
    ("sgd(0.1, lr=0.2)", 9, "given twice"),
    ("sgd(0.1) / adam(-1)", 11, "lr must be"),
    ("sgd(0.1; 2)", 7, "unexpected character ';'"),
    ("adam(betas=(0.9))", 15, "expected ','"),
    ("sgd(0.1)/", 9, "optimiser name"),
    ("", 0, "empty"),
])
def test_errors_point_at_token(text: str, column: int, words: str) -> None:
    with pytest.raises(hyper.StackSyntaxError) as info:
        hyper.parse(text)
    assert info.value.position == column
    assert words in str(info.value) and f"column {column}" in str(info.value)
    assert isinstance(info.value, ValueError)
