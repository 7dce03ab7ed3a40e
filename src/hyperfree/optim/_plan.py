r"""The per-layout constants of AGD's fast step: which *unit* of which tensor is reduced how.

:mod:`hyperfree.optim.rules` says what the cells of each kind are; this module decides, once
per parameter layout, how the fast step (:mod:`hyperfree.optim._foreach`) reaches them with few
operator calls. Every ℓ2 cell becomes one *unit*:

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
    Rows     an embedding of the spectral family: one cell per row (all rows are local, also
             when sharded).
    sign     gains of the spectral family (ℓ1 term, sign direction); polar: matrices of the
             spectral family, grouped by (d_out, d_in, dtype) for a batched Newton–Schulz.

A sharded parameter (FSDP2, ``Shard(0)``) holds the rows ``[start, start + count)`` of dim 0
(:class:`Rows`). Its units are the intersections of each global cell with those rows — possibly
empty — so every process lists the SAME units in the same order and the flat vector of partial
sums has the same length everywhere: one all-reduce sums it (``docs/agd-speed.md``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import rules
from .kinds import Kind

__all__ = ["Rows", "Whole", "Pattern", "Plan", "build_plan", "acc_dtype", "narrow"]

def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of norms and scalars: float32 for 16/32-bit tensors (‖g‖² of a
    float16 gradient would overflow in float16), float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def narrow(t: Tensor, select: tuple[int, int, int] | None) -> Tensor:
    """A unit's slice ``t.narrow(dim, start, length)`` of a local tensor; None: all of it."""
    return t if select is None else t.narrow(*select)


@dataclasses.dataclass(frozen=True)
class Rows:
    """This process holds rows ``[start, start + count)`` of dim 0 of a ``total``-row tensor."""

    start: int
    count: int
    total: int


@dataclasses.dataclass(frozen=True)
class Whole:
    param: int
    select: tuple[int, int, int] | None


@dataclasses.dataclass(frozen=True)
class Pattern:
    param: int
    select: tuple[int, int, int] | None  # the conv group's local rows
    shape: tuple[int, ...]               # logical shape of the selected slice (d0, d1, *k)
    strides: tuple[int, ...]             # its strides when the plan was built (else: generic)
    channels_last: bool                  # storage order (d0, *k, d1) instead of (d0, d1, *k)
    M: int                               # view (M, P), P = K·inner
    P: int
    K: int
    inner: int
    r: int                               # the update's view: (M / r, r·P)


def _tile(M: int, P: int, width: int = 1024) -> int:
    """Largest divisor ``r`` of ``M`` with ``r·P <= max(P, width)``: rows of the update view."""
    best = 1
    for r in range(1, max(1, width // P) + 1):
        if M % r == 0:
            best = r
    return best


def _pattern(i: int, t: Tensor, select: tuple[int, int, int] | None) -> Pattern:
    x = narrow(t, select)
    d0, d1, kernel = x.shape[0], x.shape[1], tuple(x.shape[2:])
    K = math.prod(kernel)
    cl_order = (0, *range(2, x.dim()), 1)
    channels_last = not x.is_contiguous() and x.permute(cl_order).is_contiguous()
    M, P, inner = (d0, K * d1, d1) if channels_last else (d0 * d1, K, 1)
    return Pattern(i, select, tuple(x.shape), tuple(x.stride()), channels_last, M, P, K, inner,
                   _tile(M, P))


def pattern_view(x: Tensor, u: Pattern, tiled: bool = False) -> Tensor:
    """``x`` (a selected conv group laid out as the plan saw it) as the ``(M, P)`` view, or
    ``tiled`` as the ``(M/r, r·P)`` view of the update (both alias ``x``)."""
    if u.channels_last:
        x = x.permute(0, *range(2, x.dim()), 1)
    return x.view(u.M // u.r, u.r * u.P) if tiled else x.view(u.M, u.P)


def _blocks(kind: Kind, shape: Sequence[int], rows: Rows) -> list[tuple[int, int, int]]:
    """The ℓ2 cells of a packed / grouped kind as ``(dim, start, length)`` of the LOCAL tensor
    (the intersection of each global block with the local rows; possibly empty)."""
    if kind.name == "linear_in_out":
        h = shape[1] // kind.blocks
        return [(1, b * h, h) for b in range(kind.blocks)]
    n = kind.groups if kind.name in ("conv", "conv_transpose") else kind.blocks
    h = shape[0] // n
    out = []
    for b in range(n):
        lo, hi = max(b * h, rows.start), min((b + 1) * h, rows.start + rows.count)
        out.append((0, lo - rows.start if hi > lo else 0, max(hi - lo, 0)))
    return out


@dataclasses.dataclass
class Plan:
    """The step's units and constants for one list of parameters (see the module docstring).

    The flat vector of a step holds, in this order: sums of squares of every Whole unit, then
    of every Pattern cell (``sq_sigma`` is their σ), then ℓ1 sums of the sign parameters,
    Σ_t ‖u_t‖₂ of every row-wise embedding and ⟨u, D⟩ of every Newton–Schulz matrix
    (``lin_sigma`` is their σ): ``L·G = sq_sigma·√(squares) + lin_sigma·(the rest)``.
    """

    family: str
    kinds: tuple[Kind, ...]
    shapes: tuple[tuple[int, ...], ...]    # global shapes
    rows: tuple[Rows, ...]
    sigma: tuple[float, ...]
    L: float
    whole: list[Whole]
    patterns: list[Pattern]
    row_params: list[int]
    sign: list[int]
    polar: list[tuple[int, ...]]
    retract_whole: list[Whole]
    retract_patterns: list[Pattern]
    retract_rows: list[int]
    radius: tuple[float | None, ...]
    # device constants (accumulation dtype)
    sigma_t: Tensor                        # (n,) per parameter
    sq_sigma: Tensor                       # (n_whole + Σ K,)
    lin_sigma: Tensor                      # (n_sign + n_rows + n_matrices,)
    sq_param_t: Tensor                     # (n_whole + Σ K,) parameter of each entry
    ps_index_t: Tensor                     # polar then sign parameters (as in the update)
    ps_sigma: Tensor                       # their σ
    sq_sigma_L: Tensor                     # sq_sigma / L
    lin_sigma_L: Tensor                    # lin_sigma / L
    tile_index: Tensor                     # Pattern cells -> tiled coefficient rows
    retract_rho: Tensor                    # radii of the retraction's Whole then Pattern cells
    retract_tile_index: Tensor
    n_matrices: int = 0
    host: dict = dataclasses.field(default_factory=dict)  # the same constants as Python lists
    extra: dict = dataclasses.field(default_factory=dict)  # scratch buffers of the step


def _units(params: Sequence[Tensor], kinds: Sequence[Kind], shapes, rows, pick
           ) -> tuple[list[Whole], list[Pattern], list[int]]:
    whole: list[Whole] = []
    patterns: list[Pattern] = []
    row_params: list[int] = []
    for i, (t, kind) in enumerate(zip(params, kinds)):
        how = pick(kind)
        if how is None:
            continue
        if how == "rows":
            row_params.append(i)
            continue
        shape = shapes[i]
        name = kind.name
        packed = (name in ("conv", "conv_transpose") and kind.groups > 1) or kind.blocks > 1
        selects = _blocks(kind, shape, rows[i]) if packed else [None]
        conv_cells = name in ("conv", "conv_transpose") and math.prod(shape[2:]) > 1
        for sel in selects:
            if conv_cells:
                patterns.append(_pattern(i, t, sel))
            else:
                whole.append(Whole(i, sel))
    return whole, patterns, row_params


def build_plan(params: Sequence[Tensor], kinds: Sequence[Kind], family: str, *,
               shapes: Sequence[Sequence[int]] | None = None,
               rows: Sequence[Rows] | None = None, L: float | None = None) -> Plan:
    """The plan of ``params`` (local tensors; ``shapes`` the global shapes and ``rows`` the
    local rows of sharded ones). ``L`` is Σ mass over the whole model (parameters without a
    gradient count too); default: over ``params``."""
    shapes = [tuple(s) for s in (shapes or [p.shape for p in params])]
    rows = list(rows or [Rows(0, s[0], s[0]) for s in shapes])
    dev, acc = params[0].device, acc_dtype(params[0].dtype)

    def direction(kind: Kind) -> str | None:
        how = rules.direction(kind, family)
        if how == "l2":
            return "rows" if kind.name == "embedding" and family == "spectral" else "l2"
        return None  # polar and sign are planned below

    def retraction(kind: Kind) -> str | None:
        if kind.name == "embedding":
            return "rows"
        return "l2" if kind.name in rules.MATRIX_KINDS else None

    whole, patterns, row_params = _units(params, kinds, shapes, rows, direction)
    r_whole, r_patterns, r_rows = _units(params, kinds, shapes, rows, retraction)
    polar: dict[tuple, list[int]] = {}
    sign = []
    for i, kind in enumerate(kinds):
        how = rules.direction(kind, family)
        if how == "polar":
            _, d_out, d_in = rules.matrix_dims(shapes[i], kind)
            polar.setdefault((d_out, d_in, params[i].dtype), []).append(i)
        elif how == "sign":
            sign.append(i)
    sigma = tuple(rules.scale(s, k) for s, k in zip(shapes, kinds))
    radius = tuple(rules.radius(s, k) for s, k in zip(shapes, kinds))
    groups = [tuple(v) for v in polar.values()]
    n_mats = [rules.matrix_dims(shapes[i], kinds[i])[0] for g in groups for i in g]

    def tensor(values, dtype=acc) -> Tensor:
        return torch.tensor(list(values), dtype=dtype, device=dev)

    def tile_index(pats: list[Pattern]) -> Tensor:
        idx, start = [], 0
        for u in pats:
            cols = [start + c // u.inner for c in range(u.P)]
            idx += cols * u.r
            start += u.K
        return tensor(idx, torch.long)

    cell_param = [u.param for u in patterns for _ in range(u.K)]
    lin = [sigma[i] for i in sign] + [sigma[i] for i in row_params] + \
        [sigma[i] for g in groups for i in g for _ in range(rules.matrix_dims(shapes[i],
                                                                               kinds[i])[0])]
    rho = [radius[u.param] for u in r_whole] + [radius[u.param] for u in r_patterns
                                                for _ in range(u.K)]
    total_L = float(L if L is not None else sum(rules.mass(s, k) for s, k in zip(shapes, kinds)))
    sq_param = [u.param for u in whole] + cell_param
    ps_index = [i for g in groups for i in g] + sign
    host = {"sq_sigma_L": [sigma[i] / total_L for i in sq_param], "sq_param": sq_param,
            "sq_sigma": [sigma[i] for i in sq_param],
            "lin_sigma_L": [x / total_L for x in lin], "ps_index": ps_index,
            "ps_sigma": [sigma[i] for i in ps_index]}
    plan = Plan(family, tuple(kinds), tuple(shapes), tuple(rows), sigma, total_L, whole,
                patterns, row_params, sign, groups, r_whole, r_patterns, r_rows, radius,
                tensor(sigma), tensor([sigma[u.param] for u in whole]
                                      + [sigma[i] for i in cell_param]),
                tensor(lin), tensor([u.param for u in whole] + cell_param, torch.long),
                tensor([i for g in groups for i in g] + sign, torch.long),
                tensor([sigma[i] for g in groups for i in g] + [sigma[i] for i in sign]),
                tensor([sigma[u.param] / total_L for u in whole]
                       + [sigma[i] / total_L for i in cell_param]),
                tensor([x / total_L for x in lin]),
                tile_index(patterns), tensor(rho),
                tile_index(r_patterns), sum(n_mats), host)
    plan.host["tile_index"] = plan.tile_index.tolist()
    return plan
