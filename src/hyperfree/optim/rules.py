r"""The AGD rule of every parameter kind: one :class:`KindRule` per kind, in one table.

``docs/agd-rules.md`` derives each row; ``../shared/SPEC.md`` §1.1 and §1.5 give the algorithm.
A parameter of kind ``k`` is cut into *cells*, each with a scale ``σ`` (the target size of the
cell in its norm, the AGD paper's ``s(W)``), and AGD moves every cell by
``gain · lr · (η/L) · σ`` along a unit *direction* ``D`` of that cell:

.. code-block:: text

    kind            cells (per block)          σ                        spectral D      mass
    linear          the (d_out, d_in) matrix   sqrt(d_out/d_in)          polar           1/block
    linear_in_out   the matrix, stored (in,out) sqrt(d_out/d_in)         polar           1/block
    conv            each (c_out/g, c_in/g)     sqrt(c_out/c_in)/sqrt(K)  polar           1
                    slice: K kernel positions x g groups
    conv_transpose  as conv, slice stored (c_in/g, c_out/g)              polar           1
    embedding (V,d) the table (frobenius) or    sqrt(d)                   l2 per row      1
                    each row (spectral)
    gain γ          the vector (a diagonal)     1                         sign            1/block
    bias b          the vector                  sqrt(d)                   l2              0
    generic         the whole tensor (any shape) sqrt(numel)              l2              0

The frobenius family (the paper's rule) moves every cell along ``∇/‖∇‖_F``; the spectral family
along the exact duality map of the cell's operator norm (``docs/agd-rules.md`` §1). A rule says,
for its kind: which shapes it accepts (:meth:`KindRule.check`), ``σ``, its mass in ``L``, the
*cells* each family cuts a tensor into (:meth:`KindRule.frobenius_cells`,
:meth:`KindRule.spectral_cells`, :meth:`KindRule.retraction_cells`) — as requests the plan
(:mod:`._plan`) turns into units of the fast step — the matrix view of a matrix kind, the
retraction radius, and the initialisation. Adding a kind = one entry in :data:`KIND_RULES` and
one test; nothing else compares kind names.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._kind import Kind, as_kind
from .cells import ConvCells, L2Cell, LocalRows, MatrixView, PolarCells, RowCells, SignCell

__all__ = ["Kind", "KindRule", "KIND_RULES", "KIND_NAMES", "rule_of", "as_kind",
           "is_plain_matrix"]

Shape = Sequence[int]


# ---------------------------------------------------------------- the rules
class KindRule:
    """The rule of one kind (the defaults are a vector kind's: see the subclasses)."""

    name: str = ""
    dims: str = ""            # what shape the kind needs, for the error message ("" = any)
    ndim: int | None = None   # exact number of dims (None: at least ``min_ndim``)
    min_ndim: int = 1
    packable = True           # may stack ``blocks`` equal blocks
    block_dim = 0             # the dim the blocks split
    grouped = False           # has groups (a conv's channel groups, a matrix's heads)
    has_padding_row = False   # reads its owner's ``padding_idx`` (a row kept at zero)

    def check(self, name: str, shape: Shape, kind: Kind) -> None:
        """ValueError naming ``name`` if ``shape`` cannot hold a parameter of ``kind``."""
        nd = len(shape)
        if (self.ndim is not None and nd != self.ndim) or nd < self.min_ndim:
            raise ValueError(f"parameter {name!r} of kind {kind} must be {self.dims}, got "
                             f"shape {tuple(shape)}")
        if math.prod(shape) == 0:
            raise ValueError(f"parameter {name!r} is empty (shape {tuple(shape)})")
        if kind.blocks > 1 and not self.packable:
            raise ValueError(f"parameter {name!r}: kind {kind.name} cannot be packed "
                             f"(blocks={kind.blocks})")
        n = kind.blocks * kind.groups
        if n > 1 and shape[self.block_dim] % n:
            what = (f"{kind.blocks} equal blocks" if kind.groups == 1 else
                    f"{kind.groups} groups" + (f" of {kind.blocks} blocks" if kind.blocks > 1
                                               else ""))
            raise ValueError(f"parameter {name!r}: dim {self.block_dim} of shape "
                             f"{tuple(shape)} does not split into {what}")

    def sigma(self, shape: Shape, kind: Kind) -> float:
        raise NotImplementedError

    def mass(self, shape: Shape, kind: Kind) -> float:
        """The tensor's weight in ``L``: packed blocks count as the separate tensors they are,
        and tensors summed into one pre-activation share one layer's mass."""
        return kind.blocks / kind.share

    def radius(self, shape: Shape, kind: Kind) -> float | None:
        """Frobenius norm of each retraction cell at AGD's initialisation (None: none)."""
        return None

    def blocks(self, shape: Shape, kind: Kind, rows: LocalRows) -> list[L2Cell]:
        """One ℓ2 cell per block (and group): the intersection of each global block with the
        local rows, as a slice of the LOCAL tensor (possibly empty)."""
        n = kind.blocks * kind.groups
        if n == 1:
            return [L2Cell()]
        if self.block_dim == 1:  # never sharded along dim 1: every block is local
            h = shape[1] // n
            return [L2Cell((1, b * h, h)) for b in range(n)]
        h = shape[0] // n
        out = []
        for b in range(n):
            lo, hi = max(b * h, rows.start), min((b + 1) * h, rows.start + rows.count)
            out.append(L2Cell((0, lo - rows.start if hi > lo else 0, max(hi - lo, 0))))
        return out

    def frobenius_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        """The paper's family: every block an ℓ2 cell."""
        return self.blocks(shape, kind, rows)

    def spectral_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        """The exact duality maps (default: ℓ2 blocks, exact for a vector's RMS norm)."""
        return self.blocks(shape, kind, rows)

    def retraction_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        """The cells a retraction keeps on their init sphere (default: none)."""
        return []

    def packed(self, kind: Kind, blocks: int, groups: int) -> Kind | None:
        """``kind`` with its output split into ``groups`` x ``blocks`` equal parts, as a reading
        of the forward found it (a packed projection); None if this kind cannot be packed."""
        return None

    def calibrate_(self, p: Tensor, kind: Kind, input_rms: float,
                   padding_idx: int | None) -> None:
        """Rescale ``p`` (just initialised by :meth:`init_`) for the output scale a matrix
        product with inputs of RMS ``input_rms`` gives it (default: nothing to do)."""

    @torch.no_grad()
    def init_(self, p: Tensor, kind: Kind, generator: torch.Generator | None,
              padding_idx: int | None) -> None:
        raise NotImplementedError


class MatrixRule(KindRule):
    """``linear`` (stored ``(d_out, d_in)``) and ``linear_in_out`` (stored ``(d_in, d_out)``,
    HF ``Conv1D``): ``B`` blocks (times ``g`` head groups) of ``(d_out, d_in)`` matrices,
    σ = √(d_out/d_in) of each; mass ``B``."""

    ndim = 2
    grouped = True  # per-head groups of a packed projection (cells, not mass)

    def __init__(self, name: str, transposed: bool):
        self.name, self.transposed = name, transposed
        self.block_dim = 1 if transposed else 0
        self.dims = "2-D (d_in, d_out)" if transposed else "2-D (d_out, d_in)"

    def matrix_view(self, shape: Shape, kind: Kind) -> MatrixView:
        B = kind.blocks * kind.groups
        if self.transposed:  # (in, B·h) -> (in, B, h) -> (B, h, in)
            return MatrixView((shape[0], B, shape[1] // B), (1, 2, 0), B, shape[1] // B,
                              shape[0])
        return MatrixView((B, shape[0] // B, shape[1]), (0, 1, 2), B, shape[0] // B, shape[1])

    def sigma(self, shape: Shape, kind: Kind) -> float:
        v = self.matrix_view(shape, kind)
        return math.sqrt(v.d_out / v.d_in)

    def radius(self, shape: Shape, kind: Kind) -> float:
        """Each matrix cell is σ times a semi-orthogonal matrix: norm σ·√min(d_out, d_in)."""
        v = self.matrix_view(shape, kind)
        return self.sigma(shape, kind) * math.sqrt(min(v.d_out, v.d_in))

    def spectral_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        return [PolarCells(self.matrix_view(shape, kind))]

    def retraction_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        return self.frobenius_cells(shape, kind, rows)

    def packed(self, kind: Kind, blocks: int, groups: int) -> Kind | None:
        if kind.blocks > 1 or kind.groups > 1:
            return None
        return dataclasses.replace(kind, blocks=blocks, groups=groups)

    @torch.no_grad()
    def init_(self, p: Tensor, kind: Kind, generator: torch.Generator | None,
              padding_idx: int | None) -> None:
        """Every matrix uniformly (Haar) semi-orthogonal, times σ."""
        from .init import haar_semi_orthogonal

        v = self.matrix_view(p.shape, kind)
        q = haar_semi_orthogonal(v.n, v.d_out, v.d_in, generator=generator)
        q = q * self.sigma(p.shape, kind)
        permuted = [v.split[i] for i in v.order]
        inverse = tuple(sorted(range(len(v.order)), key=v.order.__getitem__))
        p.copy_(q.to(p.dtype).reshape(permuted).permute(inverse).reshape(p.shape))


class ConvRule(MatrixRule):
    """``conv`` ``(c_out, c_in/g, *k)`` and ``conv_transpose`` ``(c_in, c_out/g, *k)``: one
    ``(c_out/g, c_in/g)`` matrix per group and kernel position, σ = √(c_out/c_in)/√K; mass 1."""

    ndim = None
    min_ndim = 3
    packable = False
    grouped = True

    def __init__(self, name: str, transposed: bool):
        super().__init__(name, transposed)
        self.block_dim = 0
        self.dims = "(c, c, *kernel)"

    def matrix_view(self, shape: Shape, kind: Kind) -> MatrixView:
        g, kernel = kind.groups, tuple(shape[2:])
        k, K = len(kernel), math.prod(kernel)
        a, b = shape[0] // g, shape[1]
        # (g, a, b, *k) -> (g, *k, d_out, d_in); a transposed conv stores (c_in/g, c_out/g)
        order = (0, *range(3, 3 + k), 2, 1) if self.transposed else (0, *range(3, 3 + k), 1, 2)
        d_out, d_in = (b, a) if self.transposed else (a, b)
        return MatrixView((g, a, b, *kernel), order, g * K, d_out, d_in)

    def sigma(self, shape: Shape, kind: Kind) -> float:
        return super().sigma(shape, kind) / math.sqrt(math.prod(shape[2:]))

    def mass(self, shape: Shape, kind: Kind) -> float:
        return 1 / kind.share  # a conv kernel counts once (the paper)

    def packed(self, kind: Kind, blocks: int, groups: int) -> Kind | None:
        return None

    def frobenius_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        """One ℓ2 cell per group (1×1 kernel), else K per group (kernel positions); a
        depthwise conv (every group's matrix ``1 × 1``: its cells are single elements), held
        whole, is one unit of all its groups' cells (a unit per group would cost a reduction
        per channel)."""
        groups = self.blocks(shape, kind, rows)
        if math.prod(shape[2:]) == 1:
            return groups
        g = kind.groups
        if g > 1 and shape[0] // g * shape[1] == 1 and rows.count == rows.total:
            return [ConvCells(None, groups=g)]
        return [ConvCells(c.select) for c in groups]


class EmbeddingRule(KindRule):
    """``embedding`` ``(V, d)``: an ℓ1→RMS map, rows of RMS 1 (σ = √d); the whole table one
    ℓ2 cell (frobenius) or one cell per row (spectral)."""

    name, dims, ndim = "embedding", "2-D (num_embeddings, d)", 2
    packable = False
    has_padding_row = True

    def sigma(self, shape: Shape, kind: Kind) -> float:
        return math.sqrt(shape[1])

    def radius(self, shape: Shape, kind: Kind) -> float:
        return math.sqrt(shape[1])  # each row at RMS 1

    def spectral_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        return [RowCells()]

    def retraction_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        return [RowCells()]

    @torch.no_grad()
    def calibrate_(self, p: Tensor, kind: Kind, input_rms: float,
                   padding_idx: int | None) -> None:
        """A table that is also an output head (tied): its logits ``⟨e_t, h⟩`` have RMS
        ``‖e_t‖·RMS(h)``, so rows of norm ``1/RMS(h)`` start them at unit scale (a loss near
        ln V) — never above the embedding's own √d (``docs/agd-rules.md`` §3, tied)."""
        if not (math.isfinite(input_rms) and input_rms > 0):
            return
        radius = min(math.sqrt(p.shape[1]), 1.0 / input_rms)
        norms = p.norm(dim=1, keepdim=True)
        p.mul_(torch.where(norms > 0, radius / norms.clamp_min(1e-30), 0.0).to(p.dtype))

    @torch.no_grad()
    def init_(self, p: Tensor, kind: Kind, generator: torch.Generator | None,
              padding_idx: int | None) -> None:
        """Every row uniform on the sphere of radius √d (RMS 1); ``padding_idx`` stays 0."""
        rows = torch.randn(p.shape, dtype=torch.float64, generator=generator)
        rows *= math.sqrt(p.shape[1]) / rows.norm(dim=1, keepdim=True)
        if padding_idx is not None:
            rows[padding_idx] = 0
        p.copy_(rows)


class GainRule(KindRule):
    """``gain`` γ of a normalisation layer: a diagonal matrix (σ = 1), sign direction in the
    spectral family (the ℓ∞ operator norm's duality map); starts at one."""

    name, dims = "gain", "at least 1-D"

    def sigma(self, shape: Shape, kind: Kind) -> float:
        return 1.0

    def spectral_cells(self, shape: Shape, kind: Kind, rows: LocalRows) -> list:
        return [SignCell()]

    @torch.no_grad()
    def init_(self, p: Tensor, kind: Kind, generator: torch.Generator | None,
              padding_idx: int | None) -> None:
        p.fill_(1.0)


class BiasRule(KindRule):
    """``bias``: one more cell of its layer, acting on the constant input 1 (σ = √d of each
    block, mass 0); starts at zero."""

    name, dims = "bias", "at least 1-D"

    def sigma(self, shape: Shape, kind: Kind) -> float:
        return math.sqrt(math.prod(shape) // kind.blocks)

    def mass(self, shape: Shape, kind: Kind) -> float:
        return 0

    def packed(self, kind: Kind, blocks: int, groups: int) -> Kind | None:
        return dataclasses.replace(kind, blocks=blocks * groups) if kind.blocks == 1 else None

    @torch.no_grad()
    def init_(self, p: Tensor, kind: Kind, generator: torch.Generator | None,
              padding_idx: int | None) -> None:
        p.zero_()


class GenericRule(KindRule):
    """``generic``: a tensor whose role no rule and no reading of the forward decides (a
    ``(1, T, d)`` position table, an SSM's ``A_log``, a scalar): the whole tensor one vector
    under its RMS norm — ℓ2 direction, σ = √numel, so it moves by η/L in RMS per step, the
    change every other cell takes at unit scale — and mass 0: it adds no layer to ``L``, so a
    model's other cells step as they would without it, but for its term in ``G``
    (``docs/agd-rules.md`` §3). Its init is the model's own."""

    name, dims = "generic", "a tensor of any shape"
    min_ndim = 0
    packable = False

    def sigma(self, shape: Shape, kind: Kind) -> float:
        return math.sqrt(math.prod(shape))

    def mass(self, shape: Shape, kind: Kind) -> float:
        return 0

    @torch.no_grad()
    def init_(self, p: Tensor, kind: Kind, generator: torch.Generator | None,
              padding_idx: int | None) -> None:
        """Keeps the model's own values: nothing says what this tensor's scale should be."""


#: The table: kind name -> its rule (``docs/agd-rules.md`` §2).
KIND_RULES: dict[str, KindRule] = {r.name: r for r in (
    MatrixRule("linear", transposed=False), MatrixRule("linear_in_out", transposed=True),
    ConvRule("conv", transposed=False), ConvRule("conv_transpose", transposed=True),
    EmbeddingRule(), GainRule(), BiasRule(), GenericRule())}
#: Every kind AGD knows.
KIND_NAMES: tuple[str, ...] = tuple(KIND_RULES)


def rule_of(kind: Kind) -> KindRule:
    """The rule of ``kind``."""
    return KIND_RULES[kind.name]


def is_plain_matrix(kind: Kind) -> bool:
    """Whether ``kind`` is ONE ``(d_out, d_in)`` matrix stored as such — what
    ``torch.optim.Muon`` expects (not a packed, grouped, transposed or conv tensor)."""
    rule = KIND_RULES[kind.name]
    return isinstance(rule, MatrixRule) and not isinstance(rule, ConvRule) \
        and not rule.transposed and kind.blocks == 1 and kind.groups == 1
