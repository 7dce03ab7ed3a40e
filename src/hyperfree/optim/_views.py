"""How the dims of a tensor map through a layout op (for :mod:`.infer`'s reading of a forward).

Two questions, answered from shapes and the op's arguments only:

* :func:`dim_map` — for a transpose, permute, (un)squeeze, expand, repeat, select or a copy:
  which input dim each output dim is (None: new or broadcast; -1: several mixed by ``repeat``).
  None for a view or reshape, whose dims are matched by :func:`view_groups` instead.
* :func:`merge_tags` — an activation's *factors* through such an op. A factor ``(stride, size,
  offset, length)`` says the dim indexes ``size`` values, ``stride`` apart, of the output rows
  ``[offset, offset + length)`` of a parameter (the whole output dim, or a piece of it cut off
  the parameter before the product). A reshape that splits a tagged dim into ``(a, b)`` gives
  ``(stride·b, a, ...)`` and ``(stride, b, ...)``; one that merges consecutive factors back
  gives their product; anything else drops them.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["dim_map", "view_groups", "merge_tags"]

_COPIES = {"clone", "_to_copy", "alias", "detach", "lift_fresh", "lift_fresh_copy",
           "contiguous", "_to_dtype", "to", "slice", "narrow", "positive", "neg"}
_VIEWS = {"view", "_unsafe_view", "reshape", "_reshape_alias", "unflatten", "flatten",
          "view_as"}


def _norm(d: int, n: int) -> int:
    return d % n if n else 0


def dim_map(name: str, args: list, old: tuple, new: tuple) -> list[int | None] | None:
    """Per output dim, the input dim it is (None: new/broadcast, -1: mixed); None: a view."""
    n_old, n_new = len(old), len(new)
    if name in _VIEWS:
        return None
    if name in _COPIES:
        return list(range(n_old)) if n_old == n_new else None
    if name == "t":
        return [1, 0] if n_old == 2 else list(range(n_old))
    if name == "transpose":
        a, b = _norm(args[1], n_old), _norm(args[2], n_old)
        perm = list(range(n_old))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    if name == "permute":
        return [_norm(d, n_old) for d in args[1]]
    if name == "unsqueeze":
        d = _norm(args[1], n_new)
        return list(range(d)) + [None] + list(range(d, n_old))
    if name == "squeeze":
        return _squeezed(old, new)
    if name == "select":
        d = _norm(args[1], n_old)
        return [j for j in range(n_old) if j != d]
    if name in ("expand", "expand_as", "repeat"):
        lead = n_new - n_old
        out: list[int | None] = [None] * lead
        for j in range(n_old):
            if old[j] == new[lead + j]:
                out.append(j)
            else:
                out.append(None if old[j] == 1 else -1)
        return out
    return None


def _squeezed(old: tuple, new: tuple) -> list[int | None]:
    out, j = [], 0
    for i, s in enumerate(old):
        if j < len(new) and new[j] == s and (s != 1 or len(old) - i <= len(new) - j):
            out.append(i)
            j += 1
    return out


def view_groups(old: tuple, new: tuple) -> list[tuple[list[int], list[int]]]:
    """Consecutive groups of input and output dims with equal products (size-1 dims alone)."""
    out: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(old) or j < len(new):
        if i < len(old) and old[i] == 1:
            out.append(([i], [j] if j < len(new) and new[j] == 1 else []))
            j += 1 if j < len(new) and new[j] == 1 else 0
            i += 1
            continue
        if j < len(new) and new[j] == 1:
            out.append(([], [j]))
            j += 1
            continue
        if i >= len(old) or j >= len(new):
            out.append((list(range(i, len(old))), list(range(j, len(new)))))
            break
        a, b, pa, pb = [i], [j], old[i], new[j]
        i, j = i + 1, j + 1
        while pa != pb and (i < len(old) or j < len(new)):
            if pa < pb and i < len(old):
                pa, a = pa * old[i], a + [i]
                i += 1
            elif j < len(new):
                pb, b = pb * new[j], b + [j]
                j += 1
            else:
                break
        out.append((a, b))
    return out


Tags = tuple  # per dim: dict[param, (stride, size)] | None


def merge_tags(tags: Tags, mapping: list | None, old: tuple, new: tuple) -> Tags:
    """``tags`` of an input of shape ``old`` carried to the output of shape ``new``."""
    if mapping is not None:
        return tuple(tags[m] if m is not None and m >= 0 else None for m in mapping)
    out: list[Any] = [None] * len(new)
    for a, b in view_groups(old, new):
        big_a = [k for k in a if old[k] > 1]
        big_b = [k for k in b if new[k] > 1]
        if len(big_a) == 1 and tags[big_a[0]]:  # one dim split into big_b (row-major)
            for p, (s, n, off, length) in tags[big_a[0]].items():
                inner = 1
                for k in reversed(big_b):
                    out[k] = {**(out[k] or {}), p: (s * inner, new[k], off, length)}
                    inner *= new[k]
        elif len(big_b) == 1 and len(big_a) > 1:  # consecutive factors merged back
            params = set.intersection(*[set(tags[k] or ()) for k in big_a])
            for p in params:
                facs = [tags[k][p] for k in big_a]
                if all(facs[q][0] == facs[q + 1][0] * facs[q + 1][1]
                       and facs[q][2:] == facs[q + 1][2:] for q in range(len(facs) - 1)):
                    out[big_b[0]] = {**(out[big_b[0]] or {}), p: (
                        facs[-1][0], math.prod(f[1] for f in facs), *facs[-1][2:])}
    return tuple(out)
