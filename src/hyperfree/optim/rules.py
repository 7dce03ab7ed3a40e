r"""The AGD rule of every parameter kind, as data plus small pure functions.

``docs/agd-rules.md`` derives each row; ``../shared/SPEC.md`` §1.1 and §1.5 give the algorithm.
In the code's symbols, a parameter of kind ``k`` is split into *cells*, each with a scale
``σ`` (the target size of the cell in its norm, from the AGD paper's ``s(W)``), and AGD moves
every cell by ``gain · lr · (η/L) · σ`` along a unit *direction* ``D`` of that cell:

.. code-block:: text

    kind            cells (per block)          σ                      dir (spectral)  mass
    linear          the (d_out, d_in) matrix   sqrt(d_out/d_in)        polar            1/block
    linear_in_out   the matrix, stored (in,out) sqrt(d_out/d_in)       polar            1/block
    conv            each (c_out/g, c_in/g)     sqrt(c_out/c_in)/sqrt(K) polar            1
                    slice: K kernel positions x g groups
    conv_transpose  as conv, slice stored (c_in/g, c_out/g)             polar            1
    embedding (V,d) the table (frobenius) or    sqrt(d)                 l2 per row       1
                    each row (spectral)
    gain γ          the vector (a diagonal)     1                       sign             1/block
    bias b          the vector                  sqrt(d)                 l2               0

* ``frobenius`` family (the paper's rule, ``preset="paper"``): every cell's direction is
  ``D = ∇/‖∇‖_F`` and its term in ``G`` is ``σ·‖∇‖_F``. For matrices this is exact under the
  paper's "gradient conditioning" assumption (stable rank 1).
* ``spectral`` family: the exact duality map of each kind's operator norm: ``polar`` is
  ``D = U Vᵀ`` of ``∇ = U Σ Vᵀ`` (Newton–Schulz, :mod:`hyperfree.optim.newton_schulz`) with
  term ``σ·‖∇‖_* = σ·⟨∇, D⟩``; ``sign`` is ``D = sign(∇)`` with term ``σ·‖∇‖_1``; ``l2`` is
  ``D = ∇/‖∇‖_2`` with term ``σ·‖∇‖_2`` (biases, and embedding rows, whose norm ℓ1→RMS has this
  exact row-wise map).

``G = (1/L) Σ terms`` with ``L = Σ mass``; a packed tensor's blocks count like the separate
matrices they are (Q, K, V: 3), a conv kernel counts once (the paper), a bias counts zero (it
is one more cell of its layer, acting on the constant input 1).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .kinds import Kind

__all__ = ["FAMILIES", "MATRIX_KINDS", "check_shape", "matrix_dims", "scale", "mass",
           "direction", "cells", "as_matrices", "from_matrices", "radius", "init_"]

FAMILIES: tuple[str, ...] = ("frobenius", "spectral")
MATRIX_KINDS: frozenset[str] = frozenset({"linear", "linear_in_out", "conv", "conv_transpose"})

Shape = Sequence[int]


def check_shape(name: str, shape: Shape, kind: Kind) -> None:
    """ValueError naming ``name`` if ``shape`` cannot hold a parameter of ``kind``."""
    nd = len(shape)
    need = {"linear": "2-D (d_out, d_in)", "linear_in_out": "2-D (d_in, d_out)",
            "embedding": "2-D (num_embeddings, d)"}
    if kind.name in need and nd != 2:
        raise ValueError(f"parameter {name!r} of kind {kind} must be {need[kind.name]}, got "
                         f"shape {tuple(shape)}")
    if kind.name in ("conv", "conv_transpose") and nd < 3:
        raise ValueError(f"parameter {name!r} of kind {kind} must be (c, c, *kernel), got "
                         f"shape {tuple(shape)}")
    if kind.name in ("gain", "bias") and nd == 0:
        raise ValueError(f"parameter {name!r} of kind {kind} must have at least one dim")
    if math.prod(shape) == 0:
        raise ValueError(f"parameter {name!r} is empty (shape {tuple(shape)})")
    split = 1 if kind.name == "linear_in_out" else 0
    if kind.blocks > 1:
        if kind.name in ("conv", "conv_transpose", "embedding"):
            raise ValueError(f"parameter {name!r}: kind {kind.name} cannot be packed (blocks="
                             f"{kind.blocks})")
        if shape[split] % kind.blocks:
            raise ValueError(f"parameter {name!r}: dim {split} of shape {tuple(shape)} does not "
                             f"split into {kind.blocks} equal blocks")
    if kind.groups > 1 and (shape[0] % kind.groups):
        raise ValueError(f"parameter {name!r}: dim 0 of shape {tuple(shape)} does not split "
                         f"into {kind.groups} groups")


def matrix_dims(shape: Shape, kind: Kind) -> tuple[int, int, int]:
    """``(n, d_out, d_in)``: a matrix kind is ``n`` matrices of shape ``(d_out, d_in)``."""
    name = kind.name
    if name == "linear":
        return kind.blocks, shape[0] // kind.blocks, shape[1]
    if name == "linear_in_out":
        return kind.blocks, shape[1] // kind.blocks, shape[0]
    K = math.prod(shape[2:])
    g = kind.groups
    if name == "conv":  # (c_out, c_in/g, *k)
        return g * K, shape[0] // g, shape[1]
    if name == "conv_transpose":  # (c_in, c_out/g, *k)
        return g * K, shape[1], shape[0] // g
    raise ValueError(f"kind {name!r} is not a matrix kind")


def scale(shape: Shape, kind: Kind) -> float:
    """``σ``, the target scale of each cell (see the table in the module docstring)."""
    name = kind.name
    if name in MATRIX_KINDS:
        _, d_out, d_in = matrix_dims(shape, kind)
        K = math.prod(shape[2:]) if name in ("conv", "conv_transpose") else 1
        return math.sqrt(d_out / d_in) / math.sqrt(K)
    if name == "embedding":
        return math.sqrt(shape[1])
    if name == "gain":
        return 1.0
    return math.sqrt(math.prod(shape) // kind.blocks)  # bias: sqrt(d) of each block


def mass(shape: Shape, kind: Kind) -> int:
    """The tensor's weight in ``L``: packed blocks count as separate matrices, a conv counts
    once, a bias zero (it is a cell of its layer)."""
    if kind.name == "bias":
        return 0
    if kind.name in ("linear", "linear_in_out", "gain"):
        return kind.blocks
    return 1


def direction(kind: Kind, family: str) -> str:
    """``"l2"``, ``"polar"`` or ``"sign"``: the unit direction of each cell."""
    if family == "frobenius" or kind.name in ("bias", "embedding"):
        return "l2"
    if family != "spectral":
        raise ValueError(f"unknown norm family {family!r}; choose one of {', '.join(FAMILIES)}")
    return "sign" if kind.name == "gain" else "polar"


def cells(t: Tensor, kind: Kind, family: str) -> tuple[Tensor, tuple[int, ...]]:
    """``(view, dims)``: ``t`` viewed so that reducing ``dims`` (keepdim) gives one value per
    cell; the view aliases ``t`` for any memory layout (only ``unflatten``, never ``view``).
    """
    name = kind.name
    if name == "linear":
        return t.unflatten(0, (kind.blocks, -1)), (1, 2)
    if name == "linear_in_out":
        return t.unflatten(1, (kind.blocks, -1)), (0, 2)
    if name in ("conv", "conv_transpose"):
        return t.unflatten(0, (kind.groups, -1)), (1, 2)
    if name == "embedding":
        return (t, (1,)) if family == "spectral" else (t, (0, 1))
    view = t.unflatten(0, (kind.blocks, -1))  # gain, bias: (blocks, d/blocks, *rest)
    return view, tuple(range(1, view.dim()))


def as_matrices(t: Tensor, kind: Kind) -> Tensor:
    """The ``(n, d_out, d_in)`` stack of a matrix kind's blocks (a copy when not a view)."""
    n, d_out, d_in = matrix_dims(t.shape, kind)
    name = kind.name
    if name == "linear":
        return t.reshape(n, d_out, d_in)
    if name == "linear_in_out":
        return t.mT.reshape(n, d_out, d_in)
    g, k = kind.groups, t.dim() - 2
    u = t.unflatten(0, (g, -1))  # conv: (g, co, ci, *k); transpose: (g, ci, co, *k)
    order = (0, *range(3, 3 + k), 1, 2) if name == "conv" else (0, *range(3, 3 + k), 2, 1)
    return u.permute(order).reshape(n, d_out, d_in)


def from_matrices(m: Tensor, shape: Shape, kind: Kind) -> Tensor:
    """Inverse of :func:`as_matrices`: a tensor of logical ``shape`` (possibly strided)."""
    name = kind.name
    if name == "linear":
        return m.reshape(shape)
    if name == "linear_in_out":
        return m.reshape(shape[1], shape[0]).mT
    g, kernel = kind.groups, tuple(shape[2:])
    k = len(kernel)
    _, d_out, d_in = m.shape
    u = m.reshape(g, *kernel, d_out, d_in)
    order = (0, k + 1, k + 2, *range(1, k + 1)) if name == "conv" else \
        (0, k + 2, k + 1, *range(1, k + 1))
    return u.permute(order).flatten(0, 1)


def radius(shape: Shape, kind: Kind) -> float | None:
    """Frobenius norm of each retraction cell at AGD's initialisation (None: not retracted).

    Matrix cells (blocks, conv slices) are ``σ`` times a semi-orthogonal matrix, so their norm
    is ``σ·sqrt(min(d_out, d_in))``; embedding rows have RMS 1, norm ``sqrt(d)``.
    """
    if kind.name in MATRIX_KINDS:
        _, d_out, d_in = matrix_dims(shape, kind)
        return scale(shape, kind) * math.sqrt(min(d_out, d_in))
    if kind.name == "embedding":
        return math.sqrt(shape[1])
    return None


@torch.no_grad()
def init_(p: Tensor, kind: Kind, *, generator: torch.Generator | None = None,
          padding_idx: int | None = None) -> Tensor:
    """Initialise ``p`` in place by its kind's rule (``docs/agd-rules.md``).

    Matrix kinds: every block / kernel slice uniformly (Haar) semi-orthogonal, times ``σ``.
    Embedding: every row uniform on the sphere of radius ``sqrt(d)`` (RMS 1); the
    ``padding_idx`` row stays zero. Gain: ones. Bias: zeros.
    """
    from .init import haar_semi_orthogonal

    name = kind.name
    if name in MATRIX_KINDS:
        n, d_out, d_in = matrix_dims(p.shape, kind)
        q = haar_semi_orthogonal(n, d_out, d_in, generator=generator) * scale(p.shape, kind)
        p.copy_(from_matrices(q.to(p.dtype), p.shape, kind))
    elif name == "embedding":
        rows = torch.randn(p.shape, dtype=torch.float64, generator=generator)
        rows *= math.sqrt(p.shape[1]) / rows.norm(dim=1, keepdim=True)
        if padding_idx is not None:
            rows[padding_idx] = 0
        p.copy_(rows)
    elif name == "gain":
        p.fill_(1.0)
    else:
        p.zero_()
    return p
