"""What AGD says about kinds: the strict error, the report, the summary line, paste-able code.

Text only: every function here takes :class:`~hyperfree.optim.kinds.ParamInfo` records and
returns strings (or the ``ValueError``), so that the module imports nothing of the optimiser.

* :func:`undeclared_error` — ``classify(model)`` / ``AGD(model, infer=False)`` with unknown
  parameters: ONE error listing every one (name, shape, owner class and its import path, a
  suggested KIND and why), then code that declares them all, ready to paste.
* :func:`report` — ``AGD.kinds_report()``: every parameter, its kind, where the kind came from
  and why, then the code that pins what was read or defaulted as declarations.
* :func:`summary` — the one line AGD warns when a kind did not come from the rules table or a
  declaration: at construction, or after the first forward when that is what it read.
* :func:`suggest` — a kind from a parameter's local name and shape only, for the strict error
  when no forward was read (labelled as such: a suggestion to check, never applied).
"""
from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .rules import Kind

__all__ = ["undeclared_error", "report", "summary", "suggest", "declarations", "kind_code"]

_BIAS_NAMES = ("bias", "b", "beta", "shift", "offset")
_GAIN_NAMES = ("weight", "scale", "gamma", "g", "gain", "alpha")


def suggest(local: str, shape: Sequence[int], owner: str) -> tuple[Kind, str]:
    """A kind for a parameter from its local name, shape and owner's class name only."""
    why = "from its name and shape only; AGD(model, example=...) reads it from the forward"
    nd, low, own = len(shape), local.lower(), owner.lower()
    if nd == 0 or math.prod(shape) == 1:
        return Kind("generic"), "a scalar; " + why
    if sum(s > 1 for s in shape) == 1:
        if low in _BIAS_NAMES or low.endswith("bias"):
            return Kind("bias"), "a vector named like a bias; " + why
        if low in _GAIN_NAMES or "norm" in own:
            return Kind("gain"), "a vector named like a gain; " + why
    if nd == 2 and low in ("weight", "kernel"):
        if "embed" in own:
            return Kind("embedding"), "a table owned by an embedding-like class; " + why
        return Kind("linear"), "a 2-D weight, assumed stored (d_out, d_in); " + why
    return Kind("generic"), "no rule fits its name and shape; " + why


def kind_code(kind: Kind) -> str:
    """``"gain"`` or ``Kind("linear", blocks=3, forks=1, terms=9)``: the kind as code."""
    extra = [f"blocks={kind.blocks}"] if kind.blocks > 1 else []
    extra += [f"groups={kind.groups}"] if kind.groups > 1 else []
    extra += [f"share={kind.share}"] if kind.share > 1 else []
    extra += [f"forks={kind.forks}"] if kind.forks else []
    extra += [f"terms={kind.terms}"] if kind.terms else []
    return f'Kind("{kind.name}", {", ".join(extra)})' if extra else f'"{kind.name}"'


def _importable(path: str) -> bool:
    return "<locals>" not in path and not path.startswith("__main__.")


def _split(path: str) -> tuple[str, str]:
    """``(module, qualname)`` of ``package.module.Class`` (the module is the longest prefix
    that is not a class: class names start upper-case by convention, nested ones too)."""
    parts = path.split(".")
    k = next((j for j, part in enumerate(parts) if part[:1].isupper() or part == "<locals>"),
             len(parts) - 1)
    return ".".join(parts[:k]), ".".join(parts[k:])


def declarations(items: Iterable[tuple[Any, Kind, str]], infos: Sequence[Any] = ()) -> str:
    """Python code declaring ``(info, kind, why)``: one ``register_kinds`` per owner class
    where every instance in the model (``infos``: all its parameters) takes the same kind,
    per-parameter ``kinds=`` for the rest (tied parameters, classes whose instances differ or
    keep a table kind), then the ``AGD(model, kinds=kinds)`` that uses them."""
    items = list(items)
    chosen = {id(info.param) for info, _, _ in items}
    per_type: dict[str, dict[str, set[Kind]]] = collections.defaultdict(
        lambda: collections.defaultdict(set))
    for info, kind, _ in items:
        if len(info.owner_paths) == 1:
            per_type[info.owner_paths[0]][info.locals[0]].add(kind)
    for info in infos:  # an instance left out (it keeps its kind) rules out its class
        for path, local in zip(info.owner_paths, info.locals):
            if id(info.param) not in chosen and path in per_type:
                per_type[path][local].add(None)
    registered = {cls: {loc: next(iter(ks)) for loc, ks in table.items()}
                  for cls, table in per_type.items()
                  if all(len(ks) == 1 and None not in ks for ks in table.values())}
    why_of: dict[tuple[str, str], tuple[int, str]] = {}
    rest = []
    for info, kind, why in items:
        cls = info.owner_paths[0] if len(info.owner_paths) == 1 else None
        if cls in registered:
            n, _ = why_of.get((cls, info.locals[0]), (0, why))
            why_of[(cls, info.locals[0])] = (n + 1, why)
        else:
            rest.append((info, kind))
    needs_kind = any(k.blocks > 1 or k.groups > 1 for _, k, _ in items)
    lines = ["import hyperfree",
             "from hyperfree.optim import " + ("Kind, register_kinds" if needs_kind
                                               else "register_kinds")]
    lines += sorted({f"from {_split(c)[0]} import {_split(c)[1].split('.')[0]}"
                     for c in registered if _importable(c)})
    for cls, table in registered.items():
        ref = _split(cls)[1] if _importable(cls) else cls.rsplit(".", 1)[-1]
        body = ", ".join(f'"{loc}": {kind_code(k)}' for loc, k in table.items())
        notes = "; ".join(f"{loc}: {why.split(';')[0]}" + (f" (x{n})" if n > 1 else "")
                          for loc in table for n, why in [why_of[(cls, loc)]])
        place = "" if _importable(cls) else " (the class in your code)"
        lines.append(f"register_kinds({ref}, {{{body}}})  # {cls}{place}: {notes}")
    body = "".join(f'\n    "{i.name}": {kind_code(k)},' for i, k in rest)
    lines += [f"kinds = {{{body}}}" if body else "kinds = {}",
              "opt = hyperfree.AGD(model, kinds=kinds)"]
    return "\n".join(lines)


def undeclared_error(infos: Sequence[Any], kind_names: Sequence[str],
                     suggestions: dict[int, tuple[Kind, str]] | None = None,
                     all_infos: Sequence[Any] = ()) -> ValueError:
    """ONE error for every unknown parameter of ``infos`` (of the model's ``all_infos``), each
    with a suggested kind (read from the forward when ``suggestions`` has it, else from its name
    and shape) and the code that declares them all."""
    lines, items = [], []
    for info in infos:
        kind, why = (suggestions or {}).get(id(info.param)) or suggest(
            info.locals[0], tuple(info.param.shape), info.owners[0])
        items.append((info, kind, why))
        shape = tuple(info.param.shape)
        if info.roles:  # a tied parameter whose owners conflict
            lines.append(f"  {info.reason} (shape {shape}); declare one kind with AGD(model, "
                         f"kinds={{{info.name!r}: KIND}}); suggested KIND {kind_code(kind)}: "
                         f"{why}")
            continue
        owner, path = info.owners[0], info.owner_paths[0]
        lines.append(f"  {info.name!r} (shape {shape}) of {owner} ({path}): declare it once per "
                     f"module type with hyperfree.optim.register_kinds({owner}, "
                     f"{{{info.locals[0]!r}: KIND}}) or per parameter with AGD(model, "
                     f"kinds={{{info.name!r}: KIND}}); suggested KIND {kind_code(kind)}: {why}")
    n = len(infos)
    head = (f"AGD has no rule for {n} parameter{'s' if n > 1 else ''} (the rules table and "
            "kinds= only; AGD(model) without infer=False reads them from the forward):")
    tail = (f"KIND is one of {', '.join(kind_names)}. To declare them all, paste (check each "
            "suggestion):\n" + _indent(declarations(items, all_infos)))
    return ValueError("\n".join([head, *lines, tail]))


def _indent(code: str) -> str:
    return "\n".join("    " + line for line in code.splitlines())


def report(infos: Sequence[Any]) -> str:
    """Every parameter: name, shape, kind, origin, why; then the code pinning what was not
    from the table or a declaration."""
    rows = [("parameter", "shape", "kind", "from", "why")]
    for i in infos:
        rows.append((i.name, str(tuple(i.param.shape)), str(i.kind), i.origin, i.reason))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    out = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows]
    pinned = [(i, i.kind, i.reason) for i in infos if i.kind is not None and (
        i.origin not in ("table", "declared", "pending") or (i.origin == "table" and i.kind.forks))]
    if pinned:
        out += ["", "To pin the kinds that were read or defaulted (and skip reading the "
                "forward), paste:", _indent(declarations(pinned, infos))]
    return "\n".join(out)


def summary(infos: Sequence[Any]) -> str | None:
    """One line about the kinds that did not come from the table or a declaration (None if
    every kind did)."""
    read = [i for i in infos if i.origin in ("inferred", "packed")]
    generic = [i for i in infos if i.origin == "generic"]
    if not read and not generic:
        return None
    by_kind = collections.Counter(str(i.kind) for i in read)
    parts = []
    if read:
        parts.append(f"{len(read)} read from the forward ("
                     + ", ".join(f"{k} x{n}" for k, n in sorted(by_kind.items())) + ")")
    if generic:
        names = ", ".join(i.name for i in generic[:3]) + (", ..." if len(generic) > 3 else "")
        parts.append(f"{len(generic)} generic ({names})")
    return (f"AGD: {len(read) + len(generic)} of {len(infos)} parameters' kinds are not the "
            f"kinds table's alone: {'; '.join(parts)}; opt.kinds_report() says why")
