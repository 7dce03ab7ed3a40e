r"""The frozen layout of AGD's fast step: which *unit* of which tensor is reduced how.

:mod:`hyperfree.optim.rules` says what the cells of each kind are (and the family piece which
of a rule's cuttings to use); this module turns them, once per parameter layout, into units
the fast step reaches with few operator calls:

.. code-block:: text

    Whole    one ℓ2 cell that is a tensor or a slice of one (narrow along a dim): a Linear
             weight, each packed block (Q/K/V, LSTM gates), a gain or bias (block), a grouped
             1×1 conv's group, a frobenius embedding. All Whole units of a step share ONE
             torch._foreach_norm and ONE torch._foreach_addcmul_.
    Pattern  a conv (group) of kernel size K > 1: reduce dims 0 and 1, one cell per kernel
             position. Stored densely (contiguous or channels_last), its cell repeats with a
             period P in memory, so it is viewed as an (M, P) matrix: cells = column sums
             folded by ``column // inner``; the update multiplies by a tiled (r·P,) coefficient
             row (a broadcast along a 9-wide inner dim is 3× slower on CPU than the floor).
             A contiguous depthwise conv (``groups`` > 1, every cell one element) is ONE unit
             of all its groups: the (1, g·K) row of its elements.
    rows     an embedding of the spectral family: one ℓ2 cell per row (rows are never split
             between shards, so their norms are final locally).
    signs    gains of the spectral family (ℓ1 term, sign direction).
    polar    matrices of the spectral family, grouped by (d_out, d_in, dtype) for a batched
             Newton–Schulz; each tensor with its :class:`~.rules.MatrixView`.

The step's partial sums go into ONE flat vector, in this order (``consts`` holds the weights):
sums of squares of every Whole unit, then of every Pattern cell (``n_sq`` entries, weights
``sq_w = σ_G/L``); ℓ1 sums of the sign tensors, Σ_r ‖u_r‖ of every row-wise embedding, ⟨u, D⟩
of every Newton–Schulz matrix (``lin_w = σ_G/L``): ``G = sq_w·√(squares) + lin_w·(the rest)``.
σ_G is σ with the forks' scale; the update's σ (``sq_sigma``, ``ps_sigma``, :attr:`Plan.sigma`)
has the streams' instead when the preset has ``streams``.

A sharded parameter (FSDP2, ``Shard(0)``) holds the rows :class:`~.rules.LocalRows`. Its units
are the intersections of each global cell with those rows — possibly empty — so every process
lists the SAME units in the same order and the flat vector of partial sums has the same length
everywhere: one all-reduce sums it (``docs/agd-speed.md``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .cells import (ConvCells, L2Cell, LocalRows, MatrixView, PolarCells, RowCells,
                    SignCell)
from .rules import Kind, rule_of

__all__ = ["Whole", "Pattern", "PolarGroup", "Consts", "Plan", "build_plan", "acc_dtype",
           "CHUNK"]

CHUNK = 73728  # elements of the CPU column-sum accumulator (288 KiB in float32: it and the
#                chunk streamed past it stay in a 1 MiB L2)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of norms and scalars: float32 for 16/32-bit tensors (‖g‖² of a
    float16 gradient would overflow in float16), float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclasses.dataclass(frozen=True)
class Whole:
    param: int
    select: tuple[int, int, int] | None  # Tensor.narrow(*select); None: the whole tensor


@dataclasses.dataclass(frozen=True)
class Pattern:
    param: int
    select: tuple[int, int, int] | None  # the conv group's local rows
    shape: tuple[int, ...]               # logical shape of the selected slice (d0, d1, *k)
    strides: tuple[int, ...]             # its strides when the plan was built (else: generic)
    order: tuple[int, ...] | None        # channels_last: the permutation to storage order
    mp: tuple[int, int]                  # the (M, P) view, P = K·inner
    tiled: tuple[int, int]               # the update's (M/r, r·P) view
    K: int                               # its cells: kernel positions (× groups)
    inner: int
    groups: int = 1                      # > 1: a depthwise conv's groups, one element a cell


@dataclasses.dataclass(frozen=True)
class PolarGroup:
    """Tensors whose matrices share one (d_out, d_in, dtype): one batched Newton–Schulz."""

    params: tuple[int, ...]
    views: tuple[MatrixView, ...]


@dataclasses.dataclass(frozen=True)
class Consts:
    """The step's constants as device tensors (accumulation dtype; indices int64); on a CPU
    plan also as numpy views of the same memory (the host finish, :mod:`._xp`)."""

    sq_w: Tensor          # (n_sq,) σ/L of every Whole unit, then of every Pattern cell
    sq_sigma: Tensor      # (n_sq,) their σ
    sq_param: Tensor      # (n_sq,) the parameter of each
    lin_w: Tensor         # σ/L of every sign tensor, row-wise embedding and NS matrix
    fresh_lin_w: Tensor   # σ/L of every sign, row and polar TENSOR (the fresh estimate's dots)
    ps_index: Tensor      # polar then sign parameters (the update's order)
    ps_sigma: Tensor      # their σ
    tile_index: Tensor    # Pattern cells -> tiled coefficient rows
    rho: Tensor           # init norms of the retraction's Whole then Pattern cells
    rho_tile_index: Tensor
    retract_coef: Tensor  # each retraction cell's coefficient in [cells | ps] (its update's)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The units and constants of one list of parameters (see the module docstring)."""

    L: float
    sigma: tuple[float, ...]            # per parameter: the step's σ (· fork or stream scale)
    radius: tuple[float | None, ...]    # per parameter: init norm of a retraction cell
    whole: tuple[Whole, ...]
    patterns: tuple[Pattern, ...]
    signs: tuple[int, ...]
    rows: tuple[int, ...]
    polar: tuple[PolarGroup, ...]
    retract_whole: tuple[Whole, ...]
    retract_patterns: tuple[Pattern, ...]
    retract_rows: tuple[int, ...]
    retract_polar: tuple[bool, ...]     # per retraction unit: moved along a polar direction
    retract_row_cell: tuple[int | None, ...]  # per row tensor: its Whole unit (frobenius)
    consts: Consts
    host_consts: Consts | None          # CPU plans: numpy views of the same memory (no copy)
    ones: tuple[Tensor, ...]            # a 0-dim 1 in each parameter's dtype (host update)
    accumulator: Tensor | None          # the CPU column-sum buffer (CHUNK elements)

    @property
    def n_sq(self) -> int:
        return self.consts.sq_w.shape[0]

    @property
    def n_main(self) -> int:
        return self.n_sq + self.consts.lin_w.shape[0]

    @property
    def n_fresh(self) -> int:
        """Length of the fresh estimate's section of the flat vector."""
        return self.n_sq + self.consts.fresh_lin_w.shape[0]

    @property
    def n_retract(self) -> int:
        """Retraction cells (Whole units, then Pattern cells)."""
        return self.consts.rho.shape[0]


def _tile(M: int, P: int, width: int = 1024) -> int:
    """Largest divisor ``r`` of ``M`` with ``r·P <= max(P, width)``: rows of the update view."""
    best = 1
    for r in range(1, max(1, width // P) + 1):
        if M % r == 0:
            best = r
    return best


def _pattern(i: int, t: Tensor, select: tuple[int, int, int] | None,
             groups: int = 1) -> Pattern:
    x = t if select is None else t.narrow(*select)
    d0, d1, kernel = x.shape[0], x.shape[1], tuple(x.shape[2:])
    K = math.prod(kernel)
    if groups > 1:  # contiguous (g, 1, *k): its g·K elements, each a cell, as a (1, g·K) row
        return Pattern(i, select, tuple(x.shape), tuple(x.stride()), None, (1, groups * K),
                       (1, groups * K), groups * K, 1, groups)
    cl_order = (0, *range(2, x.dim()), 1)
    channels_last = not x.is_contiguous() and x.permute(cl_order).is_contiguous()
    M, P, inner = (d0, K * d1, d1) if channels_last else (d0 * d1, K, 1)
    r = _tile(M, P)
    return Pattern(i, select, tuple(x.shape), tuple(x.stride()),
                   cl_order if channels_last else None, (M, P),
                   (M // r, r * P), K, inner)


class _Builder:
    """Sorts the cells the rules ask for into the plan's units."""

    def __init__(self) -> None:
        self.whole: list[Whole] = []
        self.patterns: list[Pattern] = []
        self.signs: list[int] = []
        self.rows: list[int] = []
        self.polar: dict[tuple, list[tuple[int, MatrixView]]] = {}

    def add(self, i: int, t: Tensor, cells: list) -> None:
        for cell in cells:
            if isinstance(cell, L2Cell):
                self.whole.append(Whole(i, cell.select))
            elif isinstance(cell, ConvCells) and cell.groups > 1 and not t.is_contiguous():
                self.add(i, t, [ConvCells((0, j, 1)) for j in range(cell.groups)])
            elif isinstance(cell, ConvCells):
                self.patterns.append(_pattern(i, t, cell.select, cell.groups))
            elif isinstance(cell, RowCells):
                self.rows.append(i)
            elif isinstance(cell, SignCell):
                self.signs.append(i)
            elif isinstance(cell, PolarCells):
                v = cell.view
                self.polar.setdefault((v.d_out, v.d_in, t.dtype), []).append((i, v))
            else:
                raise TypeError(f"unknown cell request {cell!r}")

    def groups(self) -> tuple[PolarGroup, ...]:
        return tuple(PolarGroup(tuple(i for i, _ in g), tuple(v for _, v in g))
                     for g in self.polar.values())


def _retraction_sources(main: _Builder, retract: _Builder, polar: list[int]
                        ) -> tuple[list[int], tuple[bool, ...], tuple[int | None, ...]]:
    """Where each retraction cell's update comes from: the index of its coefficient in
    ``[cell coefficients (n_sq) | per-tensor coefficients (polar, then sign)]``, whether the
    unit moves along a polar tensor's direction (else along ``u``), and per row tensor the
    Whole unit of a frobenius embedding (None: its rows are units of their own)."""
    n_sq = len(main.whole) + sum(u.K for u in main.patterns)
    at_polar = {i: n_sq + k for k, i in enumerate(polar)}
    whole_at = {(u.param, u.select): k for k, u in enumerate(main.whole)}
    pattern_at, off = {}, len(main.whole)
    for u in main.patterns:
        pattern_at[(u.param, u.select)] = off
        off += u.K
    coef, flags = [], []
    for u in retract.whole:
        flags.append(u.param in at_polar)
        coef.append(at_polar[u.param] if flags[-1] else whole_at.get((u.param, u.select), 0))
    for u in retract.patterns:
        flags.append(u.param in at_polar)
        start = pattern_at.get((u.param, u.select), 0)
        coef += [at_polar[u.param]] * u.K if flags[-1] else list(range(start, start + u.K))
    rows = tuple(None if i in main.rows else whole_at.get((i, None)) for i in retract.rows)
    return coef, tuple(flags), rows


def _tile_index(pats: Sequence[Pattern]) -> list[int]:
    idx, start = [], 0
    for u in pats:
        cols = [start + c // u.inner for c in range(u.mp[1])]
        idx += cols * (u.tiled[1] // u.mp[1])
        start += u.K
    return idx


def build_plan(params: Sequence[Tensor], kinds: Sequence[Kind], family, *,
               shapes: Sequence[Sequence[int]] | None = None,
               rows: Sequence[LocalRows] | None = None, L: float | None = None,
               forks: bool = False, streams: bool = False) -> Plan:
    """The plan of ``params`` (local tensors; ``shapes`` the global shapes and ``rows`` the
    local rows of sharded ones) for ``family`` (a family piece). ``L`` is Σ mass over the whole
    model (parameters without a gradient count too); default: over ``params``. ``forks``: σ
    times each kind's :attr:`~.rules.Kind.fork_scale` (in G and the step); ``streams``: the
    step's σ times :attr:`~.rules.Kind.stream_scale` instead (G unchanged)."""
    shapes = [tuple(s) for s in (shapes or [p.shape for p in params])]
    rows = list(rows or [LocalRows(0, s[0], s[0]) if s else LocalRows(0, 1, 1) for s in shapes])
    dev, acc = params[0].device, acc_dtype(params[0].dtype)
    main, retract = _Builder(), _Builder()
    for i, (t, kind, shape, r) in enumerate(zip(params, kinds, shapes, rows)):
        rule = rule_of(kind)
        main.add(i, t, family.cells(rule, shape, kind, r))
        retract.add(i, t, rule.retraction_cells(shape, kind, r))
    # σ in G (the majorant: §10's forks) and σ of the step (the stream's terms, §16)
    sigma_g = tuple(rule_of(k).sigma(s, k) * (k.fork_scale if forks else 1.0)
                    for s, k in zip(shapes, kinds))
    sigma = tuple(sg * (k.stream_scale / (k.fork_scale if forks else 1.0) if streams else 1.0)
                  for sg, k in zip(sigma_g, kinds))
    radius = tuple(rule_of(k).radius(s, k) for s, k in zip(shapes, kinds))
    total_L = float(L if L is not None else
                    sum(rule_of(k).mass(s, k) for s, k in zip(shapes, kinds)))
    groups = main.groups()
    polar = [i for g in groups for i in g.params]
    n_mats = [v.n for g in groups for v in g.views]
    sq_param = [u.param for u in main.whole] + [u.param for u in main.patterns
                                                for _ in range(u.K)]
    lin = [sigma_g[i] for i in main.signs] + [sigma_g[i] for i in main.rows] + \
        [sigma_g[i] for i, n in zip(polar, n_mats) for _ in range(n)]

    def tensor(values, dtype=acc) -> Tensor:
        return torch.tensor(list(values), dtype=dtype, device=dev)

    retract_coef, retract_polar, retract_row_cell = _retraction_sources(main, retract, polar)

    consts = Consts(
        sq_w=tensor(sigma_g[i] / total_L for i in sq_param),
        sq_sigma=tensor(sigma[i] for i in sq_param), sq_param=tensor(sq_param, torch.long),
        lin_w=tensor(x / total_L for x in lin),
        fresh_lin_w=tensor(sigma_g[i] / total_L for i in (*main.signs, *main.rows, *polar)),
        ps_index=tensor(polar + main.signs, torch.long),
        ps_sigma=tensor(sigma[i] for i in polar + main.signs),
        tile_index=tensor(_tile_index(main.patterns), torch.long),
        rho=tensor([radius[u.param] for u in retract.whole]
                   + [radius[u.param] for u in retract.patterns for _ in range(u.K)]),
        rho_tile_index=tensor(_tile_index(retract.patterns), torch.long),
        retract_coef=tensor(retract_coef, torch.long))
    ones = {d: torch.ones((), dtype=d, device=dev) for d in {p.dtype for p in params}}
    needs_acc = dev.type == "cpu" and (main.patterns or retract.patterns)
    host = Consts(*(t.numpy() for t in dataclasses.astuple(consts))) if dev.type == "cpu" \
        else None
    return Plan(total_L, sigma, radius, tuple(main.whole), tuple(main.patterns),
                tuple(main.signs), tuple(main.rows), groups, tuple(retract.whole),
                tuple(retract.patterns), tuple(retract.rows), retract_polar,
                retract_row_cell, consts, host,
                tuple(ones[p.dtype] for p in params),
                torch.empty(CHUNK, dtype=acc, device=dev) if needs_acc else None)
