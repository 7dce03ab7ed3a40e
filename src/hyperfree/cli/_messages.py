"""The library's messages in the command's words.

The library names its settings as Python does: ``TrainConfig(data_dir=..., train_bs=...)``,
``load_dataset(..., download=True)``. A user of ``hyperfree train`` typed ``--data-dir`` and
``--train-bs``, so :func:`as_flags` rewrites, for every setting that has a flag (read from the
subcommand's parser by :func:`flag_table`):

* ``name=True`` -> ``--name`` (a switch), ``name=value`` -> ``--name value``;
* ``name`` written with an underscore (``train_bs``) -> ``--train-bs``;
* a message that starts ``name must`` (``epochs must be ...``) -> ``--epochs must be ...``;
* ``name (value)`` -> ``--name value``;

and then drops a flag repeated in brackets (``--download (--download)``).
"""
from __future__ import annotations

import argparse
import re

__all__ = ["flag_table", "as_flags", "first_line"]

# settings whose name in the library differs from the flag's dest
_ALIASES = {"out_dir": "--out", "num_workers": "--workers"}


def flag_table(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{setting name: "--flag"}`` for every long option of ``parser`` (and the aliases)."""
    table: dict[str, str] = {}
    for action in parser._actions:  # argparse offers no public list of its actions
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in (argparse.SUPPRESS, "help"):
            table[action.dest] = longs[0]
    for name, flag in _ALIASES.items():
        if flag in table.values():
            table[name] = flag
    return table


def first_line(err: BaseException) -> str:
    """The first line of an error, as one readable line (``OSError``: reason and file)."""
    if isinstance(err, OSError) and err.strerror and not isinstance(err, FileNotFoundError):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}"
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__


def as_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with the library's setting names replaced by ``flags`` (see above)."""
    for name in sorted(flags, key=len, reverse=True):
        flag = flags[name]
        edge = r"(?<![\w.'\"-])"
        message = re.sub(edge + re.escape(name) + r"=True\b", flag, message)
        message = re.sub(edge + re.escape(name) + r"=(?!=) ?", flag + " ", message)
        message = re.sub(edge + re.escape(name) + r" \((\S+?)\)", flag + r" \1", message)
        if "_" in name:
            message = re.sub(edge + re.escape(name) + r"(?![\w=(])", flag, message)
        message = re.sub(r"^" + re.escape(name) + r" must\b", flag + " must", message)
    return re.sub(r"(--[\w-]+) \(\1\)", r"\1", message)
