"""How each ATen op of a forward uses a parameter: the rules of :mod:`hyperfree.optim.infer`,
as the methods of :class:`OpRules`, which the forward's reader (:class:`._reader.Reader`)
calls for every op that consumes a parameter or an activation it tracks.

A matrix product reads which dim of the parameter is in and which out (``linear``), a
convolution a ``conv`` of its groups, an index lookup an ``embedding``, a normalisation op's
weight and bias a ``gain`` and a ``bias``, an RNN op its gates, a pointwise product with an
activation a ``gain`` and an addition a ``bias``; every other use is recorded without a kind.
The records (:class:`Use`, :class:`Reading`, ``_Src``, ``_Act``) are defined here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .rules import Kind

__all__ = ["Use", "Reading", "OpRules", "LAYOUT", "SPLIT", "MATMUL", "NORMS", "LOOKUP"]


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
    share: int = 1                   # matrices whose products are added into its pre-activation
    forks: int = 0                   # sums of forked activations with it on one side only
    terms: int = 1                   # the terms of the streams those sums join (product)


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
    direct: bool = False  # a matrix product's output, seen through layout ops only
    block: tuple[frozenset[int], int] | None = None  # block k of a direct packed product


LAYOUT = {"t", "transpose", "permute", "view", "_unsafe_view", "reshape", "_reshape_alias",
           "unsqueeze", "squeeze", "expand", "repeat", "clone", "_to_copy", "alias", "detach",
           "lift_fresh", "lift_fresh_copy", "contiguous", "unflatten", "flatten", "view_as",
           "expand_as", "_to_dtype", "to", "slice", "select", "narrow"}
SPLIT = {"split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
          "unbind", "tensor_split"}
#: matrix products: (index of the added input or None, of the left, of the right operand)
MATMUL = {"mm": (None, 0, 1), "bmm": (None, 0, 1), "matmul": (None, 0, 1), "mv": (None, 0, 1),
           "addmm": (0, 1, 2), "baddbmm": (0, 1, 2), "addbmm": (0, 1, 2), "addmv": (0, 1, 2)}
#: normalisation ops: (index of the weight arg, index of the bias arg or None)
NORMS = {"native_layer_norm": (2, 3), "layer_norm": (2, 3), "native_batch_norm": (1, 2),
          "_native_batch_norm_legit": (1, 2), "_native_batch_norm_legit_no_training": (1, 2),
          "_native_batch_norm_legit_functional": (1, 2), "_batch_norm_with_update": (1, 2),
          "_batch_norm_no_update": (1, 2), "batch_norm": (1, 2), "cudnn_batch_norm": (1, 2),
          "miopen_batch_norm": (1, 2), "native_group_norm": (1, 2), "group_norm": (2, 3),
          "_fused_rms_norm": (2, None), "rms_norm": (2, None)}
LOOKUP = {"embedding", "_embedding_bag", "_embedding_bag_forward_only", "embedding_bag"}
_AFFINE = {"add", "sub", "rsub", "mul", "div", "neg", "positive"}
_CUDNN_GATES = {0: 1, 1: 1, 2: 4, 3: 3}


def _vector(shape: Sequence[int]) -> bool:
    return len(shape) >= 1 and sum(s > 1 for s in shape) <= 1



class OpRules:
    """The per-op rules of the reader (mixed into :class:`._reader.Reader`, which provides the
    records: ``_get``, ``_set``, ``_use``, ``_event``, ``_piece``)."""

    # ------------------------------------------------------------ uses
    def _matmul(self, name: str, args: list, out: Tensor) -> None:
        if name == "linear":  # linear(x, W, b) = x @ W.T + b: W stored (out, in)
            bias, a, b = (args[2] if len(args) > 2 else None), args[0], args[1]
            rb = self._get(b)
            if isinstance(rb, _Src) and len(rb.dims) == 2:
                rb = dataclasses.replace(rb, dims=(rb.dims[1], rb.dims[0]))
        else:
            bi, ai, ci = MATMUL[name]
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
        new = _Act(tuple(tags), direct=True)
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
        wi, bi = NORMS[name]
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
            projection = not g or bool(hidden and p.shape[0] != g * hidden)
            if projection:
                g = 1  # an LSTM projection (proj_size, hidden): in series, its own layer
            # the input and recurrent matrices are summed into the gates: one layer, half each
            kind = (Kind("linear", blocks=g, share=1 if projection else 2) if p.dim() == 2
                    else Kind("bias", blocks=g) if p.dim() == 1 else None)
            self._use(rec, kind, name, f"a {'matrix' if p.dim() == 2 else 'bias'} of the "
                      f"fused recurrent aten.{name} ({g} gate{'s' if g > 1 else ''})")

    def _summed(self, operands: list) -> None:
        """Matrix products (or the same block of packed ones) added straight into one
        pre-activation (``W_ih x + W_hh h``): one layer acting on the concatenated inputs,
        whose mass they share. Not when the operands' lineages meet (``h + W1 f(h)`` with
        ``h = W0 x``, or a shortcut ``Ws h`` beside it): they fork from a common input, so the
        sum is a fork's join, which the lineage counts (a recurrent cell's first step has
        disjoint lineages, and the share is the largest over its steps)."""
        found, lineages = [], []
        for t, r in operands:
            if not isinstance(r, _Act):
                continue
            if r.direct:
                mine = {p for tag in r.tags if tag for p in tag if self._params[p].dim() >= 2}
                if len(mine) == 1:
                    found.append((frozenset(mine), None))
                    lineages.append(self._lineage_of(t))
            elif r.block is not None:
                found.append(r.block)
                lineages.append(self._lineage_of(t))
        if len(found) > 1 and len({k for _, k in found}) == 1:
            params = [p for mine, _ in found for p in mine]
            forked = any(lineages[i] & lineages[j] for i in range(len(found))
                         for j in range(i))
            if len(set(params)) == len(params) and not forked:
                self._sums.append(frozenset(params))

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
        if name == "add":
            self._summed(others)
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
            acts = [r for _, r in others if isinstance(r, _Act)]
            # a bias (a parameter) added to one product is still that product's pre-activation
            direct = name in ("add", "sub") and len(acts) == 1 and acts[0].direct \
                and len(others) == 1 and bool(srcs)
            new = _Act(tuple(tags), direct=direct)
            new.chain = tuple(dict.fromkeys(chain)) + (new,)
            self._set(out, new)

