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
tensors are packing events. :meth:`Reader.readings` turns both into one :class:`Reading` per
parameter. A failure inside the reader never reaches the user's forward: it is kept in
``Reader.error`` and the reading stops.
"""
from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ._views import dim_map, merge_tags, view_groups
from .rules import Kind

__all__ = ["Use", "Reading", "Reader"]


@dataclasses.dataclass(frozen=True)
class Use:
    """One use of a parameter: the kind it implies (None: no rule), the op, and why."""

    kind: Kind | None
    op: str
    why: str
    piece: bool = False  # the use read a slice or split of the parameter


@dataclasses.dataclass
class Reading:
    """What the forward showed about one parameter."""

    uses: list[Use]
    packing: tuple[int, int] | None  # (blocks, groups) of a packed output, if one was seen
    input_rms: float | None          # largest RMS of an activation it multiplied as a matrix


@dataclasses.dataclass(frozen=True)
class _Src:
    """A tensor that IS a parameter, seen through layout ops: per dim, the parameter's dim
    (None: a new or broadcast dim, -1: dims mixed by a reshape); ``span`` = (param dim, start,
    length) when it is one piece cut along one dim, ``piece`` when it is any part."""

    param: int
    dims: tuple[int | None, ...]
    piece: bool = False
    span: tuple[int, int, int] | None = None


@dataclasses.dataclass(eq=False)
class _Act:
    """An activation: per dim, the factors of matrix outputs it carries ({param: (stride,
    size, offset, length)}: :mod:`._views`), the records from the product to here, and the
    ops that consumed it."""

    tags: tuple[dict[int, tuple[int, int, int, int]] | None, ...]
    chain: tuple[_Act, ...] = ()
    consumers: list[tuple[str, int | None]] = dataclasses.field(default_factory=list)


_LAYOUT = {"t", "transpose", "permute", "view", "_unsafe_view", "reshape", "_reshape_alias",
           "unsqueeze", "squeeze", "expand", "repeat", "clone", "_to_copy", "alias", "detach",
           "lift_fresh", "lift_fresh_copy", "contiguous", "unflatten", "flatten", "view_as",
           "expand_as", "_to_dtype", "to", "slice", "select", "narrow"}
_SPLIT = {"split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
          "unbind", "tensor_split"}
#: matrix products: (index of the added input or None, of the left, of the right operand)
_MATMUL = {"mm": (None, 0, 1), "bmm": (None, 0, 1), "matmul": (None, 0, 1), "mv": (None, 0, 1),
           "addmm": (0, 1, 2), "baddbmm": (0, 1, 2), "addbmm": (0, 1, 2), "addmv": (0, 1, 2)}
#: normalisation ops: (index of the weight arg, index of the bias arg or None)
_NORMS = {"native_layer_norm": (2, 3), "layer_norm": (2, 3), "native_batch_norm": (1, 2),
          "_native_batch_norm_legit": (1, 2), "_native_batch_norm_legit_no_training": (1, 2),
          "_native_batch_norm_legit_functional": (1, 2), "_batch_norm_with_update": (1, 2),
          "_batch_norm_no_update": (1, 2), "batch_norm": (1, 2), "cudnn_batch_norm": (1, 2),
          "miopen_batch_norm": (1, 2), "native_group_norm": (1, 2), "group_norm": (2, 3),
          "_fused_rms_norm": (2, None), "rms_norm": (2, None)}
_LOOKUP = {"embedding", "_embedding_bag", "_embedding_bag_forward_only", "embedding_bag"}
_AFFINE = {"add", "sub", "rsub", "mul", "div", "neg", "positive"}
_CUDNN_GATES = {0: 1, 1: 1, 2: 4, 3: 3}


def _vector(shape: Sequence[int]) -> bool:
    return len(shape) >= 1 and sum(s > 1 for s in shape) <= 1


class Reader(TorchDispatchMode):
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
        self.error: str | None = None

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
                self._observe(func, list(args) + list(kwargs.values()), out)
            except Exception as e:  # a reading must never break the user's forward
                self.error = f"{func}: {type(e).__name__}: {e}"
        return out

    def _observe(self, func, args: list, out) -> None:
        flat = [a for x in args for a in (x if isinstance(x, (list, tuple)) else (x,))]
        if not any(self._get(a) is not None for a in flat):
            return
        name = func.overloadpacket.__name__
        name = name[:-1] if name.endswith("_") and not name.startswith("_") else name
        if name in _LAYOUT:
            self._layout(name, args, out)
        elif name in _SPLIT:
            self._split(name, args, out)
        elif name in _MATMUL or name == "linear":
            self._matmul(name, args, out)
        elif name in ("convolution", "_convolution"):
            self._conv(name, args)
        elif name in _LOOKUP or name in ("index_select", "index"):
            self._lookup(name, args)
        elif name in _NORMS:
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
            self._set(out, self._piece(rec, dim, out.dim(), name != "select"))
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
        new = _Act(merge_tags(rec.tags, mapping, tuple(x.shape), tuple(out.shape)))
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
        for o in pieces:
            self._set(o, self._piece(rec, dim, o.dim(), not removed))

    def _event(self, rec: _Act, dim: int, sizes: list[int]) -> None:
        if len(sizes) > 1 and len(set(sizes)) == 1:
            for p, factor in rec.tags[dim].items():
                self._events.append((p, factor, len(sizes), rec, dim))

    def _piece(self, rec: _Act, dim: int, ndim: int, keeps_dim: bool) -> _Act:
        """A piece of ``rec``: a split along a packed dim ends those parameters' tracking (the
        piece is one block's content); along any other dim the tags carry on."""
        gone = set(rec.tags[dim] or ())
        tags = [None if not t else ({p: f for p, f in t.items() if p not in gone} or None)
                for j, t in enumerate(rec.tags) if keeps_dim or j != dim]
        if keeps_dim and gone:
            tags[dim] = None
        new = _Act(tuple(tags[:ndim]))
        new.chain = (rec.chain if not gone else ()) + (new,)
        return new

    # ------------------------------------------------------------ uses
    def _matmul(self, name: str, args: list, out: Tensor) -> None:
        if name == "linear":  # linear(x, W, b) = x @ W.T + b: W stored (out, in)
            bias, a, b = (args[2] if len(args) > 2 else None), args[0], args[1]
            rb = self._get(b)
            if isinstance(rb, _Src) and len(rb.dims) == 2:
                rb = dataclasses.replace(rb, dims=(rb.dims[1], rb.dims[0]))
        else:
            bi, ai, ci = _MATMUL[name]
            bias, a, b = (args[bi] if bi is not None else None), args[ai], args[ci]
            rb = self._get(b)
        self._product(name, a, self._get(a), b, rb, out)
        rbias = self._get(bias)
        if isinstance(rbias, _Src):
            self._bias(rbias, name, f"the bias added in aten.{name}", out)

    def _product(self, name: str, a: Any, ra: Any, b: Any, rb: Any, out: Tensor) -> None:
        """``a @ b``: the parameter's dims say which of its dims is in (contracted), which
        out."""
        if isinstance(ra, _Src) and isinstance(rb, _Src):
            for r in (ra, rb):
                self._use(r, None, name, f"aten.{name} of two parameters")
            return
        for right, rec, other in ((True, rb, a), (False, ra, b)):
            if not isinstance(rec, _Src):
                continue
            p = self._params[rec.param]
            if len(rec.dims) < 2:
                self._use(rec, None, name, f"a vector in aten.{name}")
                return
            pin, pout = ((rec.dims[-2], rec.dims[-1]) if right else (rec.dims[-1], rec.dims[-2]))
            if p.dim() != 2 or {pin, pout} != {0, 1} or any(d is not None
                                                           for d in rec.dims[:-2]):
                self._use(rec, None, name, f"aten.{name} of a {p.dim()}-D tensor")
                return
            kind = Kind("linear" if pout == 0 else "linear_in_out")
            stored = "(d_out, d_in)" if pout == 0 else "(d_in, d_out)"
            self._use(rec, kind, name, f"the matrix of aten.{name}, stored {stored}")
            self._out_dim[rec.param] = pout
            if rec.param in self._measure and isinstance(other, Tensor):
                rms = float(other.detach().float().pow(2).mean().sqrt())
                self.rms[rec.param] = max(rms, self.rms.get(rec.param, 0.0))
            odim = out.dim() - 1 if right or out.dim() < 2 else out.dim() - 2
            self._tag(out, odim, rec, pout)
            return
        act = ra if isinstance(ra, _Act) else rb
        if isinstance(act, _Act):
            act.consumers.append((name, None))

    def _tag(self, out: Any, odim: int, rec: _Src, pdim: int) -> None:
        """Mark dim ``odim`` of ``out`` as indexing output rows of the parameter (its dim
        ``pdim``: all of them, or the piece ``rec.span``)."""
        p = self._params[rec.param]
        if not isinstance(out, Tensor) or not 0 <= odim < out.dim():
            return
        if rec.span is not None and rec.span[0] == pdim:
            _, off, length = rec.span
        elif not rec.piece:
            off, length = 0, p.shape[pdim]
        else:
            return
        if out.shape[odim] != length:
            return
        old = self._get(out)
        tags = list(old.tags) if isinstance(old, _Act) else [None] * out.dim()
        tags[odim] = {**(tags[odim] or {}), rec.param: (1, length, off, length)}
        new = _Act(tuple(tags))
        new.chain = (old.chain[:-1] if isinstance(old, _Act) else ()) + (new,)
        self._set(out, new)

    def _bias(self, rec: _Src, op: str, why: str, out: Any) -> None:
        p = self._params[rec.param]
        if not _vector(p.shape):
            self._use(rec, None, op, f"added to activations by aten.{op} but it varies along "
                      f"{sum(s > 1 for s in p.shape)} axes (shape {tuple(p.shape)}): a table, "
                      "not a bias")
            return
        self._use(rec, Kind("bias"), op, why)
        k = next((j for j, d in enumerate(rec.dims) if d == 0), None)
        if p.dim() == 1 and k is not None and isinstance(out, Tensor):
            self._out_dim[rec.param] = 0
            self._tag(out, out.dim() - len(rec.dims) + k, rec, 0)

    def _conv(self, name: str, args: list) -> None:
        w, b = self._get(args[1]), self._get(args[2])
        transposed, groups = bool(args[6]), int(args[8])
        if isinstance(w, _Src):
            t, p = args[1], self._params[w.param]
            ok = not w.piece and tuple(t.shape) == tuple(p.shape) and all(
                d == j for j, d in enumerate(w.dims) if t.shape[j] > 1)
            kind = Kind("conv_transpose" if transposed else "conv", groups=groups) if ok \
                else None
            self._use(w, kind, name, f"the kernel of aten.{name}" + (
                " (transposed)" if transposed else "") + (f", groups={groups}"
                                                          if groups > 1 else ""))
        if isinstance(b, _Src):
            self._bias(b, name, f"the bias of aten.{name}", None)
        if isinstance(self._get(args[0]), _Act):
            self._get(args[0]).consumers.append((name, None))

    def _lookup(self, name: str, args: list) -> None:
        rec = self._get(args[0])
        if not isinstance(rec, _Src):
            return self._other(name, [a for a in args if isinstance(a, Tensor)])
        p = self._params[rec.param]
        rows = rec.dims == (0, 1) and not rec.piece and p.dim() == 2
        if name == "index_select":
            rows = rows and args[1] % 2 == 0
        elif name == "index":
            idx = list(args[1])
            rows = rows and len(idx) >= 1 and isinstance(idx[0], Tensor) and all(
                i is None for i in idx[1:])
        self._use(rec, Kind("embedding") if rows else None, name,
                  f"rows looked up by aten.{name}" if rows else
                  f"indexed by aten.{name}, not by rows of a 2-D table")

    def _norm(self, name: str, args: list) -> None:
        wi, bi = _NORMS[name]
        for i, role in ((wi, "gain"), (bi, "bias")):
            rec = self._get(args[i]) if i is not None and i < len(args) else None
            if isinstance(rec, _Src):
                ok = _vector(self._params[rec.param].shape)
                self._use(rec, Kind(role) if ok else None, name,
                          f"the {'weight' if role == 'gain' else 'bias'} of aten.{name}")
        if isinstance(self._get(args[0]), _Act):
            self._get(args[0]).consumers.append((name, None))

    def _cat(self, args: list) -> None:
        tensors = list(args[0])
        recs = [self._get(t) for t in tensors]
        acts = any(not isinstance(r, _Src) for r in recs)
        for r in recs:
            if isinstance(r, _Src):
                token = acts and _vector(self._params[r.param].shape)
                self._use(r, Kind("bias") if token else None, "cat",
                          "joined to the activations by aten.cat (a learned token: the output "
                          "of a constant input, as a bias is)" if token else
                          "concatenated by aten.cat with no activation or as a table")
            elif isinstance(r, _Act):
                r.consumers.append(("cat", None))

    def _rnn(self, name: str, args: list) -> None:
        hidden, gates = None, None
        if name == "mkldnn_rnn_layer":
            hidden = int(args[10])
        elif name == "_cudnn_rnn":
            hidden, gates = int(args[7]), _CUDNN_GATES.get(int(args[6]))
        elif name in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
            gates = {"lstm": 4, "gru": 3}.get(name, 1)
        flat = [x for arg in args for x in (arg if isinstance(arg, (list, tuple)) else (arg,))]
        for a in flat:
            rec = self._get(a)
            if not isinstance(rec, _Src):
                continue
            p = self._params[rec.param]
            g = gates if gates is not None else (p.shape[0] // hidden if hidden else 1)
            if not g or (hidden and p.shape[0] != g * hidden):
                g = 1  # an LSTM projection (proj_size, hidden)
            kind = (Kind("linear", blocks=g) if p.dim() == 2 else
                    Kind("bias", blocks=g) if p.dim() == 1 else None)
            self._use(rec, kind, name, f"a {'matrix' if p.dim() == 2 else 'bias'} of the "
                      f"fused recurrent aten.{name} ({g} gate{'s' if g > 1 else ''})")

    def _pointwise(self, name: str, args: list, out: Any) -> None:
        tensors = [a for a in args if isinstance(a, Tensor)]
        recs = [self._get(a) for a in tensors]
        srcs = [(t, r) for t, r in zip(tensors, recs) if isinstance(r, _Src)]
        others = [(t, r) for t, r in zip(tensors, recs) if not isinstance(r, _Src)]
        if len(srcs) > 1:
            for _, r in srcs:
                self._use(r, None, name, f"aten.{name} of two parameters")
            return
        if srcs:
            t, rec = srcs[0]
            if not any(o.numel() > t.numel() for o, _ in others):
                # with scalars only: an affine function of the parameter, followed on
                if name in _AFFINE and isinstance(out, Tensor) and out.shape == t.shape:
                    self._set(out, rec)
                else:
                    self._use(rec, None, name, f"transformed by aten.{name}, which no rule "
                              "reads")
                return
            shape = tuple(self._params[rec.param].shape)
            if name == "mul" and _vector(shape):
                self._use(rec, Kind("gain"), name, "multiplies an activation elementwise "
                          "(aten.mul): a diagonal map")
            elif name in ("add", "sub"):
                self._bias(rec, name, f"added to an activation (aten.{name})", out)
            elif name == "mul":
                self._use(rec, None, name, f"multiplies activations elementwise but varies "
                          f"along {sum(s > 1 for s in shape)} axes (shape {shape})")
            else:
                self._use(rec, None, name, f"combined with an activation by aten.{name}, "
                          "which no rule reads")
        if not isinstance(out, Tensor):
            return
        old = self._get(out)
        tags = list(old.tags) if isinstance(old, _Act) else [None] * out.dim()
        chain: tuple[_Act, ...] = old.chain[:-1] if isinstance(old, _Act) else ()
        for t, r in others:
            if not isinstance(r, _Act):
                continue
            r.consumers.append((name, None))
            chain += r.chain
            off = out.dim() - t.dim()
            for j, tag in enumerate(r.tags):
                if tag and 0 <= j + off < out.dim() and t.shape[j] == out.shape[j + off]:
                    tags[j + off] = {**(tags[j + off] or {}), **tag}
        if any(tags):
            new = _Act(tuple(tags))
            new.chain = tuple(dict.fromkeys(chain)) + (new,)
            self._set(out, new)

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
        return [Reading(self.uses[i], self._packing(i, pure.get(i, set())), self.rms.get(i))
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
