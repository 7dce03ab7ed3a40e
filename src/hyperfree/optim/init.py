"""The AGD paper's initialisation: uniformly random semi-orthogonal slices, rescaled.

``../shared/SPEC.md`` §1.1: every 2-D weight, and every ``(c_out, c_in)`` kernel slice of a 4-D
weight, is drawn uniformly (Haar measure) from the semi-orthogonal matrices, then the whole
tensor is multiplied by ``s(W)``; every singular value of every slice is then ``s(W)``.

Haar sampling: ``A`` with i.i.d. standard normal entries (the taller way round), ``A = QR``,
``Q ← Q · diag(sign(diag R))`` (Mezzadri, 2007: without the sign fix ``Q`` is not uniform).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["haar_semi_orthogonal", "orthogonal_init_"]


def haar_semi_orthogonal(batch: int, rows: int, cols: int, *, dtype: torch.dtype = torch.float64,
                         generator: torch.Generator | None = None) -> Tensor:
    """``batch`` independent uniformly random ``rows × cols`` semi-orthogonal matrices (on CPU).

    Rows are orthonormal when ``rows <= cols``, columns when ``rows >= cols``.
    """
    tall = rows >= cols
    n, m = (rows, cols) if tall else (cols, rows)
    a = torch.randn(batch, n, m, dtype=dtype, generator=generator)
    q, r = torch.linalg.qr(a)  # q: (batch, n, m)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    q = q * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(-2)
    return q if tall else q.transpose(-2, -1)


@torch.no_grad()
def orthogonal_init_(weight: Tensor, scale: float, *, generator: torch.Generator | None = None
                     ) -> Tensor:
    """Fill a 2-D or 4-D ``weight`` in place with scaled Haar semi-orthogonal slices."""
    if weight.dim() == 2:
        q = haar_semi_orthogonal(1, weight.shape[0], weight.shape[1], generator=generator)[0]
        weight.copy_(q.mul_(scale))
    elif weight.dim() == 4:
        c_out, c_in, kx, ky = weight.shape
        q = haar_semi_orthogonal(kx * ky, c_out, c_in, generator=generator)  # (k, c_out, c_in)
        weight.copy_(q.mul_(scale).permute(1, 2, 0).reshape(c_out, c_in, kx, ky))
    else:
        raise ValueError(f"orthogonal_init_: weight of shape {tuple(weight.shape)} is neither "
                         "2-D (d_out, d_in) nor 4-D (c_out, c_in, k_x, k_y)")
    return weight
