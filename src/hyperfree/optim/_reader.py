"""The reader of a forward: a ``TorchDispatchMode`` that records how each parameter is used.

:mod:`hyperfree.optim.infer` documents the rules; this module is their machinery. Every ATen
operation of the forward passes through :meth:`Reader.__torch_dispatch__`, which runs it and
then updates two kinds of records, keyed by the tensors (weakly: nothing of the forward is kept
alive):

* ``_Src`` — a tensor that IS a parameter seen through layout ops (which parameter dim each of
  its dims is, whether it is a piece, and which piece);
* ``_Act`` — an activation that carries matrix outputs (per dim, the factors of the output rows
  of the parameters that produced it), with the chain of records from the product to it and
  the ops that consumed each, which decides whether a split of it is packing.

An op consuming a ``_Src`` is a :class:`Use` (the kind it implies, or None); splits of ``_Act``
tensors are packing events. Every op is also recorded in the forward's graph
(:class:`._paths.Paths`: each tensor's lineage and the fork–joins, from which the forks).
:meth:`Reader.readings` turns all of it into one :class:`Reading` per parameter. A failure
inside the reader never reaches the user's forward: it is kept in ``Reader.error`` and the
reading stops.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ._paths import Paths
from ._uses import (LAYOUT, LOOKUP, MATMUL, NORMS, SPLIT, OpRules, Reading, Use, _Act,
                    _Src)
from ._views import dim_map, merge_tags, view_groups
from .rules import Kind

__all__ = ["Use", "Reading", "Reader"]


class Reader(OpRules, TorchDispatchMode):
    """Records, while active, every use of ``params`` by the ops of a forward (module
    docstring). ``measure``: indices of the parameters whose matrix inputs' RMS to record."""

    def __init__(self, params: Sequence[Tensor], measure: Sequence[int] = ()) -> None:
        super().__init__()
        self._params = list(params)
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._info: dict[int, tuple[Any, Any]] = {}
        self._measure = set(measure)
        self.uses: list[list[Use]] = [[] for _ in self._params]
        self.rms: dict[int, float] = {}
        self._out_dim: dict[int, int] = {}
        self._events: list[tuple[int, tuple[int, int, int, int], int, _Act, int]] = []
        self._slices: list[tuple[_Act, int, int, int]] = []
        self._cuts: dict[int, set[tuple[int, int]]] = {}  # param -> {(dim, boundary)}
        self._sums: list[frozenset[int]] = []  # matrices added into one pre-activation
        # every tensor's lineage, the forward's graph and its fork–joins (forks per parameter)
        self._paths = Paths(self._index)
        self.error: str | None = None

    def alias(self, t: Tensor, i: int) -> None:
        """Read ``t`` as parameter ``i`` (the whole tensor an FSDP2 unit gathers for it)."""
        self._index.setdefault(id(t), i)

    # ------------------------------------------------------------ records of tensors
    def _get(self, t: Any) -> _Src | _Act | None:
        if not isinstance(t, Tensor):
            return None
        i = self._index.get(id(t))
        if i is not None:
            return _Src(i, tuple(range(t.dim())))
        entry = self._info.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def _set(self, t: Any, rec: Any) -> None:
        if isinstance(t, Tensor) and rec is not None:
            self._info[id(t)] = (weakref.ref(t), rec)

    def _use(self, src: _Src, kind: Kind | None, op: str, why: str) -> None:
        self.uses[src.param].append(Use(kind, op, why, src.piece))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.error is None:
            try:
                operands = list(args) + list(kwargs.values())
                # the operands' lineages before this op's (an in-place add_ returns its operand)
                self._observe(func, operands, out)
                self._trace(func, operands, out)
            except Exception as e:  # a reading must never break the user's forward
                self.error = f"{func}: {type(e).__name__}: {e}"
        return out

    def _lineage_of(self, t: Any) -> frozenset[int]:
        return self._paths.lineage(t)

    def _trace(self, func, args: list, out) -> None:
        """Record ``out`` in the forward's paths (:class:`._paths.Paths`)."""
        flat = [a for x in args for a in (x if isinstance(x, (list, tuple)) else (x,))]
        self._paths.trace(func.overloadpacket.__name__, flat, out)

    def _observe(self, func, args: list, out) -> None:
        flat = [a for x in args for a in (x if isinstance(x, (list, tuple)) else (x,))]
        if not any(self._get(a) is not None for a in flat):
            return
        name = func.overloadpacket.__name__
        name = name[:-1] if name.endswith("_") and not name.startswith("_") else name
        if name in LAYOUT:
            self._layout(name, args, out)
        elif name in SPLIT:
            self._split(name, args, out)
        elif name in MATMUL or name == "linear":
            self._matmul(name, args, out)
        elif name in ("convolution", "_convolution"):
            self._conv(name, args)
        elif name in LOOKUP or name in ("index_select", "index"):
            self._lookup(name, args)
        elif name in NORMS:
            self._norm(name, args)
        elif name == "cat":
            self._cat(args)
        elif "rnn" in name or name in ("lstm", "gru"):
            self._rnn(name, args)
        elif torch.Tag.pointwise in func.tags:
            self._pointwise(name, args, out)
        else:
            self._other(name, flat)

    def _other(self, name: str, flat: list) -> None:
        for a in flat:
            rec = self._get(a)
            if isinstance(rec, _Src):
                self._use(rec, None, name, f"consumed by aten.{name}, which no rule reads")
            elif isinstance(rec, _Act):
                rec.consumers.append((name, None))

    # ------------------------------------------------------------ layout and splits
    def _layout(self, name: str, args: list, out: Tensor) -> None:
        x, rec = args[0], self._get(args[0])
        if rec is None or not isinstance(out, Tensor):
            return
        cut = name in ("slice", "select", "narrow") and tuple(out.shape) != tuple(x.shape)
        dim = args[1] % x.dim() if cut and isinstance(args[1], int) else None
        lo = hi = 0
        if cut:
            n = x.shape[dim]
            if name == "select":
                lo = args[2] % n
                hi = lo + 1
            elif name == "narrow":
                lo, hi = args[2] % n, args[2] % n + args[3]
            elif (args[4] if len(args) > 4 else 1) == 1:
                start, end = (list(args[2:4]) + [None, None])[:2]
                lo = 0 if start is None else min(n, max(0, start + n if start < 0 else start))
                hi = n if end is None else min(n, max(0, end + n if end < 0 else end))
        if isinstance(rec, _Act) and cut and rec.tags[dim]:
            rec.consumers.append(("split", dim))
            if name == "select":
                self._event(rec, dim, [1] * x.shape[dim])
            elif hi > lo:
                self._slices.append((rec, dim, lo, hi))
            self._set(out, self._piece(rec, dim, out.dim(), name != "select",
                                       lo if hi > lo else -1))
            return
        mapping = dim_map(name, args, tuple(x.shape), tuple(out.shape))
        if isinstance(rec, _Src):
            dims = tuple(_map_src(rec.dims, mapping, tuple(x.shape), tuple(out.shape)))
            span = rec.span
            if cut:
                pdim = rec.dims[dim]
                whole = not rec.piece and pdim is not None and pdim >= 0
                span = (pdim, lo, hi - lo) if whole and hi > lo else None
                if whole and name == "select":
                    self._cuts.setdefault(rec.param, set()).update(
                        (pdim, b) for b in range(1, x.shape[dim]))
            self._set(out, _Src(rec.param, dims, rec.piece or cut, span))
            return
        rec.consumers.append((name, dim))
        new = _Act(merge_tags(rec.tags, mapping, tuple(x.shape), tuple(out.shape)),
                   direct=rec.direct)
        new.chain = rec.chain + (new,)
        self._set(out, new)

    def _split(self, name: str, args: list, out: Any) -> None:
        x, rec = args[0], self._get(args[0])
        pieces = [o for o in out if isinstance(o, Tensor)] if isinstance(out, (list, tuple)) \
            else []
        if rec is None or not pieces:
            return
        at = 1 if name == "unbind" else 2
        dim = (args[at] if len(args) > at and isinstance(args[at], int) else 0) % x.dim()
        removed = pieces[0].dim() < x.dim()
        sizes = [1 if removed else o.shape[dim] for o in pieces]
        if isinstance(rec, _Src):
            pdim = rec.dims[dim]
            whole = not rec.piece and pdim is not None and pdim >= 0
            dims = tuple(d for j, d in enumerate(rec.dims) if not (removed and j == dim))
            start = 0
            for o, size in zip(pieces, sizes):
                if whole and start:
                    self._cuts.setdefault(rec.param, set()).add((pdim, start))
                self._set(o, _Src(rec.param, dims, True, (pdim, start, size) if whole else None))
                start += size
            return
        rec.consumers.append(("split", dim))
        if rec.tags[dim]:
            self._event(rec, dim, sizes)
        for k, o in enumerate(pieces):
            self._set(o, self._piece(rec, dim, o.dim(), not removed, k))

    def _event(self, rec: _Act, dim: int, sizes: list[int]) -> None:
        if len(sizes) > 1 and len(set(sizes)) == 1:
            for p, factor in rec.tags[dim].items():
                self._events.append((p, factor, len(sizes), rec, dim))

    def _piece(self, rec: _Act, dim: int, ndim: int, keeps_dim: bool, index: int = 0) -> _Act:
        """A piece of ``rec``: a split along a packed dim ends those parameters' tracking (the
        piece is one block's content, remembered as block ``index`` of a direct product); along
        any other dim the tags carry on."""
        gone = set(rec.tags[dim] or ())
        tags = [None if not t else ({p: f for p, f in t.items() if p not in gone} or None)
                for j, t in enumerate(rec.tags) if keeps_dim or j != dim]
        if keeps_dim and gone:
            tags[dim] = None
        matrices = frozenset(p for p in gone if self._params[p].dim() >= 2)
        new = _Act(tuple(tags[:ndim]), direct=rec.direct and not gone,
                   block=(matrices, index) if rec.direct and len(matrices) == 1 else None)
        new.chain = (rec.chain if not gone else ()) + (new,)
        return new

    # ------------------------------------------------------------ the result
    def readings(self) -> list[Reading]:
        """Every parameter's uses, packing and matrix-input RMS (after the forward)."""
        events = list(self._events)
        cuts: dict[tuple[int, int], tuple[_Act, list[tuple[int, int]]]] = {}
        for rec, dim, lo, hi in self._slices:
            cuts.setdefault((id(rec), dim), (rec, []))[1].append((lo, hi))
        for (_, dim), (rec, ranges) in cuts.items():
            ranges = sorted(set(ranges))
            joined = all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            if len(ranges) > 1 and len({hi - lo for lo, hi in ranges}) == 1 and joined \
                    and ranges[0][0] == 0 and ranges[-1][1] == _size(rec, dim):
                for p, factor in rec.tags[dim].items():
                    events.append((p, factor, len(ranges), rec, dim))
        pure: dict[int, set[tuple[tuple[int, int, int, int], int]]] = {}
        for p, factor, k, rec, dim in events:
            if all(len(c.consumers) == 1 for c in rec.chain[:-1]) and all(
                    c == ("split", dim) for c in rec.consumers):
                pure.setdefault(p, set()).add((factor, k))
        share = {i: max((len(s) for s in self._sums if i in s), default=1)
                 for i in range(len(self._params))}
        joins, after = self._paths.fork_joins(len(self._params))
        terms = self._paths.terms(joins, after)
        return [Reading(self.uses[i], self._packing(i, pure.get(i, set())), self.rms.get(i),
                        share[i], len(joins[i]), terms[i])
                for i in range(len(self._params))]

    def _packing(self, i: int, events: set) -> tuple[int, int] | None:
        """(blocks, groups) of parameter ``i``'s output dim from its pure split events and the
        cuts of the parameter itself; None if there are none or they disagree."""
        if i not in self._out_dim:
            return None
        od = self._out_dim[i]
        N = self._params[i].shape[od]
        bounds = {0, N}
        heads = set()
        for (s, n, off, length), k in events:
            if s * n == length and length % k == 0:
                bounds.update(off + j * length // k for j in range(1, k))
            elif off == 0 and length == N and N % (s * n) == 0 and n % k == 0:
                heads.add((k, N // (s * n)))
        whole_used = any(not u.piece for u in self.uses[i])
        if not whole_used:
            bounds.update(b for d, b in self._cuts.get(i, ()) if d == od)
        edges = sorted(bounds)
        sizes = {b - a for a, b in zip(edges, edges[1:])}
        if heads:
            return next(iter(heads)) if len(heads) == 1 and len(edges) == 2 else None
        return (len(edges) - 1, 1) if len(sizes) == 1 and len(edges) > 2 else None


def _size(rec: _Act, dim: int) -> int:
    """The size of dim ``dim`` of the tensor ``rec`` describes (its factor's size)."""
    return next(iter(rec.tags[dim].values()))[1]


def _map_src(dims: tuple, mapping: Any, old: tuple, new: tuple) -> list:
    """A parameter's dims through a layout op (``mapping`` from :func:`dim_map`, or None for a
    view: matched by :func:`view_groups`)."""
    if mapping is not None:
        return [(-1 if m == -1 else dims[m]) if m is not None else None for m in mapping]
    result: list[int | None] = [None] * len(new)
    for a, b in view_groups(old, new):
        big_a = [j for j in a if old[j] > 1]
        big_b = [j for j in b if new[j] > 1]
        for j in b:
            if len(big_a) <= 1 and len(big_b) <= 1:
                result[j] = dims[big_a[0]] if big_a and j in big_b else None
            else:
                result[j] = -1
    return result
