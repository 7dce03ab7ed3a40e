"""Forks from the paths of a forward: the sums that every path of a parameter crosses.

:class:`Paths` follows every tensor of a forward that the reader (:mod:`._reader`) sees: its
*lineage* (the parameters it was computed from) and, for a tensor with a lineage, a node of the
forward's graph (one per op; its children are the ops that consume an output of it).

A sum ``y = a + b`` of two tensors with a parameter in common but not the same lineage joins two
paths from a common input: a fork–join (a residual branch and its skip, a shortcut beside a
branch; ``docs/agd-rules.md`` §4). ``docs/agd-stability.md`` §10 derives the step of a tensor
whose path to the output crosses such a sum on one side: the sum passes on the operand's share
of its relative change. That holds when EVERY path from the tensor to the output goes through
that operand — in the graph's terms, when the operand's node *post-dominates* the parameter
with respect to the output. So a parameter's forks are the join operands that

* post-dominate it (the output is the forward's last node; paths that never reach it — a cache,
  a finiteness check — are dead ends and ignored), and
* hold it in their lineage while the other operand does not (the skip ``h`` of ``h + f(h)``
  post-dominates what computed ``h``, which is on both sides).

An op that writes in place into a view of a tensor (``out[:, t] = ...``: a recurrence filling
its output buffer step by step, as RWKV's CPU kernel does) writes into the view's base too:
later reads of the base follow the write (``docs/agd-stability.md`` §17; before, the base kept
only what it was made from, and what the recurrence wrote seemed to reach nothing).

A chain of residual blocks reads as before: one fork per branch, two inside a nested branch,
two for GPT-NeoX's twice-summed parallel attention. What a lineage alone over-counted does not
fork: T5 adds the relative position bias made in its first layer to every later layer's
scores, and the first layer's norm, query and key sit in those scores' lineage — but their
paths through the stream's skips bypass the sums, so those sums do not dilute them (the
lineage gave the first encoder norm 4 forks; the paths give its own residual's 1). Likewise an
encoder that feeds several cross-attention branches of a decoder, and RWKV's token shift and
time recurrence (17 forks for the first LayerNorm). A parameter whose paths never reach the
last node (a second output head) keeps the lineage's count.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ._uses import LAYOUT

__all__ = ["Paths"]

_NONE: frozenset[int] = frozenset()
_JOINS = ("add", "add_")
#: the reader's layout ops that pass a whole tensor on as it is (a view, a copy, a cast, a
#: transpose; not a slice or a broadcast): a stream seen through them is the same stream (FSDP2
#: views every unit's inputs, for its hooks)
_SAME = frozenset(LAYOUT - {"expand", "expand_as", "repeat", "slice", "select", "narrow",
                            "lift_fresh", "lift_fresh_copy"})


class Paths:
    """The lineage of a forward's tensors, its graph and its fork–joins, and from them each
    parameter's forks and streams (module docstring). ``index`` maps ``id(parameter)`` to its
    index (the reader's own dict: aliases added to it later count)."""

    def __init__(self, index: Mapping[int, int]) -> None:
        self._index = index
        self._seen: dict[int, tuple[Any, frozenset[int], int]] = {}  # id -> (ref, lineage, node)
        self._children: list[list[int]] = []     # node -> the nodes that consumed it
        self._consumers: dict[int, list[int]] = {}  # parameter -> the nodes that consumed it
        # (operand node, lineage(a) − lineage(b), join node)
        self._sides: list[tuple[int, frozenset[int], int]] = []
        self._joins: dict[int, tuple[int | None, int | None]] = {}  # join node -> operand nodes
        self._through: dict[int, int] = {}  # a node of a _SAME op -> the node it passes on

    def _record(self, t: Tensor) -> tuple[frozenset[int], int | None, int | None]:
        """(lineage, node, parameter index) of ``t``."""
        i = self._index.get(id(t))
        if i is not None:
            return frozenset((i,)), None, i
        entry = self._seen.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1], entry[2], None
        return _NONE, None, None

    def lineage(self, t: Any) -> frozenset[int]:
        """The parameters ``t`` was computed from (empty for anything else)."""
        return self._record(t)[0] if isinstance(t, Tensor) else _NONE

    def trace(self, name: str, flat: list, out: Any) -> None:
        """Record op ``name`` on the operands ``flat`` (read before the op runs: an in-place
        ``add_`` returns its operand) with outputs ``out``."""
        recs = [self._record(a) for a in flat if isinstance(a, Tensor)]
        union = _NONE.union(*(r[0] for r in recs))
        outs = [o for o in (out if isinstance(out, (list, tuple)) else (out,))
                if isinstance(o, Tensor)]
        if not union or not outs:
            return  # no parameter behind it, or nothing comes out (.item()): a dead end
        node = len(self._children)
        self._children.append([])
        for _, parent, param in recs:
            if parent is not None:
                self._children[parent].append(node)
            elif param is not None:
                self._consumers.setdefault(param, []).append(node)
        if name in _SAME and len(recs) == 1 and recs[0][1] is not None and len(outs) == 1:
            self._through[node] = self._through.get(recs[0][1], recs[0][1])
        if name in _JOINS and len(recs) == 2:
            (la, na, _), (lb, nb, _) = recs
            if la & lb and la != lb:
                self._joins[node] = tuple(  # type: ignore[assignment]
                    self._through.get(n, n) if n is not None else None for n in (na, nb))
                self._sides += [(n, mine - other, node) for n, mine, other in
                                ((na, la, lb), (nb, lb, la)) if n is not None and mine - other]
        for o in outs:
            self._seen[id(o)] = (weakref.ref(o), union, node)
        view = flat[0] if flat and isinstance(flat[0], Tensor) else None
        if name.endswith("_") and view is not None and outs[0] is view \
                and view._base is not None:  # written in place through a view: its base too
            self._write(view._base, union, node)

    def _write(self, base: Tensor, union: frozenset[int], node: int) -> None:
        """``base`` now holds what the in-place op ``node`` wrote into a view of it (a
        recurrence filling ``out[:, t] = ...`` step by step): later reads of ``base`` read
        ``node`` and what it was computed from, beside what ``base`` held."""
        lineage, parent, param = self._record(base)
        if param is not None:
            return  # a parameter written in place: it stays the parameter
        if parent is not None and node not in self._children[parent]:
            self._children[parent].append(node)
        self._seen[id(base)] = (weakref.ref(base), lineage | union, node)

    def forks(self, n: int) -> list[int]:
        """Each of the ``n`` parameters' forks: the join operands that post-dominate it and
        hold it on their side only (the lineage's count where it does not reach the output)."""
        return [len(f) for f in self.fork_joins(n)[0]]

    def terms(self, forks: list[list[int]], after: list[int | None]) -> list[int]:
        """Each parameter's stream terms, from its fork joins ``forks`` and the post-dominators
        ``after`` (:meth:`fork_joins`): over the distinct streams its forks join, the product
        of each stream's number of terms (1 for no fork). A stream is the sum of sums its
        fork's join flows into: the post-dominators of the join that are joins holding it in
        their tree of sums (seen through views and copies, :data:`_SAME`); its terms, that
        tree's operands which are not joins themselves."""
        leaves: dict[int, int] = {}
        tree: dict[int, frozenset[int]] = {}
        for j in sorted(self._joins):  # creation order: a join's operands come first
            ops = [o for o in self._joins[j] if o is not None]
            leaves[j] = sum(leaves.get(o, 1) for o in ops)
            tree[j] = frozenset((j,)).union(*(tree[o] for o in ops if o in tree))

        def end(j: int) -> int:  # the last join of the stream j flows into
            while True:
                nxt = after[j]
                while nxt is not None and nxt in self._through and after[nxt] != nxt:
                    nxt = after[nxt]  # through views of the stream
                if nxt is None or nxt == j or j not in tree.get(nxt, _NONE):
                    return j
                j = nxt

        out = []
        for f in forks:
            prod = 1
            for s in {end(j) for j in f}:
                prod *= leaves[s]
            out.append(prod)
        return out

    def fork_joins(self, n: int) -> tuple[list[list[int]], list[int | None]]:
        """Each of the ``n`` parameters' fork joins (one per fork: :meth:`forks` counts them,
        :meth:`terms` follows their streams), and every node's immediate post-dominator."""
        count: list[list[int]] = [[] for _ in range(n)]
        if not self._sides:
            return count, []
        after = _post_dominators(self._children)
        last = len(after) - 1
        for p in range(n):
            chain: set[int] = set()  # the nodes that post-dominate p: every path crosses them
            node = _meet([c for c in self._consumers.get(p, ()) if after[c] is not None],
                         after)
            while node is not None:
                chain.add(node)
                node = after[node] if node != last else None
            count[p] = [j for at, side, j in self._sides
                        if p in side and (not chain or at in chain)]
        return count, after


def _post_dominators(children: list[list[int]]) -> list[int | None]:
    """Each node's immediate post-dominator with respect to the last node (which maps to
    itself); None for the nodes that do not reach it. Nodes are numbered in creation order, so
    every child comes after its parent and is settled first (the intersection of Cooper,
    Harvey & Kennedy, "A Simple, Fast Dominance Algorithm", 2001, on the reversed graph)."""
    last = len(children) - 1
    after: list[int | None] = [None] * len(children)
    after[last] = last
    for u in range(last - 1, -1, -1):
        live = [c for c in children[u] if after[c] is not None]
        if live:
            after[u] = _meet(live, after)
    return after


def _meet(nodes: list[int], after: list[int | None]) -> int | None:
    """The nearest common post-dominator of ``nodes`` (None for none)."""
    if not nodes:
        return None
    a = nodes[0]
    for b in nodes[1:]:
        while a != b:
            if a < b:
                a = after[a]  # type: ignore[assignment]
            else:
                b = after[b]  # type: ignore[assignment]
    return a
