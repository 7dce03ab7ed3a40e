r"""``parse``: build a tower from text, written top-down as in the paper.

.. code-block:: text

    stack := term ("/" term)*     "adam(1e-3) / sgd(1e-5)" = Adam(1e-3, optimizer=SGD(1e-5))
    term  := NAME ["(" [arg ("," arg)*] ")"]
    arg   := value | NAME "=" value      positional arguments follow the constructor's order
    value := NUMBER | "(" NUMBER "," NUMBER ")"      (the pair is Adam's betas)

Names (case-insensitive): ``sgd``, ``sgdperparam``, ``adagrad``, ``rmsprop``, ``rmsproplr``,
``adam``, ``adamlr``. ``repr(parse(text))`` is the canonical text, and ``parse(repr(stack))``
rebuilds an equal stack. Errors raise :class:`StackSyntaxError` naming the column of the
offending token.
"""
from __future__ import annotations

import inspect
import re
from typing import Any

from .optimizers import OPTIMIZERS, HyperOptimizer

__all__ = ["parse", "StackSyntaxError"]

_TOKEN = re.compile(r"\s*(?:(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[()/,=]))")


class StackSyntaxError(ValueError):
    """Text that is not a valid optimiser stack; ``position`` is the 0-based column."""

    def __init__(self, text: str, position: int, message: str) -> None:
        super().__init__(f"{message} at column {position} of {text!r}")
        self.text, self.position = text, position


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise StackSyntaxError(text, bad, f"unexpected character {text[bad]!r}")
        kind = m.lastgroup or "op"
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i = text, _tokenize(text), 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, kind: str, value: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind or (value is not None and tok[1] != value):
            found = "end of text" if tok[0] == "end" else repr(tok[1])
            raise StackSyntaxError(self.text, tok[2], f"expected {what or repr(value)}, "
                                                      f"found {found}")
        self.i += 1
        return tok

    def value(self) -> Any:
        if self.peek()[1] == "(":
            self.take("op", "(")
            first = float(self.take("num", what="a number")[1])
            self.take("op", ",")
            second = float(self.take("num", what="a number")[1])
            self.take("op", ")")
            return (first, second)
        return float(self.take("num", what="a number or a (beta1, beta2) pair")[1])

    def term(self) -> tuple[type[HyperOptimizer], dict[str, Any], int]:
        _, name, pos = self.take("name", what="an optimiser name")
        cls = OPTIMIZERS.get(name.lower())
        if cls is None:
            raise StackSyntaxError(self.text, pos, f"unknown optimiser {name!r} (choose one "
                                                   f"of {', '.join(OPTIMIZERS)})")
        params = [p for p in inspect.signature(cls.__init__).parameters
                  if p not in ("self", "optimizer")]
        kwargs: dict[str, Any] = {}
        if self.peek()[1] == "(":
            self.take("op", "(")
            while self.peek()[1] != ")":
                if kwargs:
                    self.take("op", ",", "',' or ')'")
                self.argument(name, params, kwargs)
            self.take("op", ")")
        return cls, kwargs, pos

    def argument(self, name: str, params: list[str], kwargs: dict[str, Any]) -> None:
        kind, key, pos = self.peek()
        if kind == "name":
            self.take("name")
            self.take("op", "=")
            if key not in params:
                raise StackSyntaxError(self.text, pos, f"{name} has no argument {key!r} "
                                                       f"(it takes {', '.join(params)})")
        else:
            if len(kwargs) >= len(params):
                raise StackSyntaxError(self.text, pos, f"too many arguments for {name} "
                                                       f"(it takes {', '.join(params)})")
            key = params[len(kwargs)]
        if key in kwargs:
            raise StackSyntaxError(self.text, pos, f"argument {key!r} of {name} given twice")
        kwargs[key] = self.value()

    def stack(self) -> list[tuple[type[HyperOptimizer], dict[str, Any], int]]:
        terms = [self.term()]
        while self.peek()[1] == "/":
            self.take("op", "/")
            terms.append(self.term())
        self.take("end", what="'/' or end of text")
        return terms


def parse(text: str) -> HyperOptimizer:
    """Build the tower that ``text`` describes (top-down), e.g. ``"adam(1e-3) / sgd(1e-5)"``.

    Raises :class:`StackSyntaxError` (a ``ValueError``) pointing at the offending token.
    """
    if not isinstance(text, str) or not text.strip():
        raise StackSyntaxError(str(text), 0, "empty optimiser stack; write e.g. 'sgd(0.01)'")
    terms = _Parser(text).stack()
    optimizer = _build(text, *terms[-1], None)
    for cls, kwargs, pos in reversed(terms[:-1]):
        optimizer = _build(text, cls, kwargs, pos, optimizer)
    return optimizer


def _build(text: str, cls: type[HyperOptimizer], kwargs: dict[str, Any], pos: int,
           optimizer: HyperOptimizer | None) -> HyperOptimizer:
    try:
        return cls(**kwargs, optimizer=optimizer)
    except (ValueError, TypeError) as exc:
        raise StackSyntaxError(text, pos, str(exc)) from None
