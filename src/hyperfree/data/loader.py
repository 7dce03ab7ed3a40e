"""In-memory batching: :class:`TensorLoader` and the whole-batch augmentation it uses.

The dataset lives on the training device as uint8 (images) or int64 (text) tensors; a batch is
gathered with one index operation, augmented with whole-batch tensor ops (never a per-sample
Python loop) and normalised as ``(x / 255 - mean) / std`` per channel. This is the
GPU-resident loader idea of Keller Jordan's airbench, with the paper's CIFAR augmentation
(Bernstein et al. 2023, §experiments: random crop 32 with padding 4, random horizontal flip).

Order and augmentation of epoch ``e`` are a pure function of ``(seed, e)``: at the start of an
epoch a CPU ``torch.Generator`` seeded by :func:`epoch_seed` draws the permutation of all ``N``
samples, then (if augmenting) one crop offset pair and one flip bit per sample, in permutation
order. With ``world_size = W`` the global batch ``k`` is ``perm[k*B:(k+1)*B]`` and rank ``r``
takes its rows ``[r*B/W, (r+1)*B/W)``, so ``W`` ranks together see exactly the single-process
batch, augmentation included. With ``drop_last=False`` the last global batch may be short and
is split the same way (a rank's share can then be smaller, even empty): use ``drop_last=True``
for DDP training.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["TensorLoader", "epoch_seed", "zero_pad", "crop_flip", "random_crop", "random_flip",
           "normalise", "rank_slice"]

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads (seed, epoch) pairs over 64 bits


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of epoch ``epoch``: a fixed 63-bit mix of ``(seed, epoch)``."""
    return (seed * _MIX + epoch * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def zero_pad(x: Tensor, pad: int) -> Tensor:
    """``x`` (B, C, H, W) with ``pad`` zeros on each side of H and W (a copy into zeros, which is
    much cheaper on CPU than ``F.pad`` for uint8)."""
    B, C, H, W = x.shape
    out = x.new_zeros(B, C, H + 2 * pad, W + 2 * pad)
    out[:, :, pad:pad + H, pad:pad + W] = x
    return out


def crop_flip(x: Tensor, pad: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """Random crop with zero padding and random horizontal flip in ONE gather.

    With ``P = zero_pad(x, pad)`` of width ``Wp = W + 2 pad``, offsets ``(dy_b, dx_b)`` and flip
    bits ``f_b``, the result is ``out[b, c, i, j] = P[b, c, dy_b + i, dx_b + j_b]`` with
    ``j_b = W - 1 - j`` if ``f_b`` else ``j``, i.e. ``flip_b(P[b, :, dy:dy+H, dx:dx+W])``. The
    flat index ``(dy_b + i) * Wp + dx_b + j_b`` of every output pixel is built from (B, H) and
    (B, W) pieces, so there is no per-sample Python loop.
    """
    B, C, H, W = x.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    j = torch.arange(W, device=x.device)
    cols = torch.where(flips[:, None], W - 1 - j, j) + offsets[:, 1, None]  # (B, W)
    rows = offsets[:, 0, None] + torch.arange(H, device=x.device)  # (B, H)
    flat = (rows[:, :, None] * Wp + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
    return zero_pad(x, pad).view(B, C, Hp * Wp).gather(2, flat).view(B, C, H, W)


def random_crop(x: Tensor, pad: int, offsets: Tensor) -> Tensor:
    """Zero-pad ``x`` (B, C, H, W) by ``pad`` on each side, then crop (H, W) at ``offsets``.

    ``offsets`` is int64 (B, 2) of ``(dy, dx)`` in ``[0, 2*pad]``; sample ``b`` of the result is
    ``zero_pad(x)[b, :, dy:dy+H, dx:dx+W]``.
    """
    offsets = offsets.to(x.device)
    no_flip = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return crop_flip(x, pad, offsets, no_flip)


def random_flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror sample ``b`` of ``x`` (B, C, H, W) left-right where ``flip[b]`` is True."""
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(x / 255 - mean) / std`` per channel of (B, C, H, W), in float32; ``mean``/``std`` (C,).

    Computed in place as ``x * (1 / (255 std)) - mean / std`` (equal up to float rounding).
    """
    scale = (1.0 / (255.0 * std))[:, None, None]
    shift = (mean / std)[:, None, None]
    return x.float().mul_(scale).sub_(shift)


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Rows of a global batch of ``n`` owned by ``rank``: ``[r*n/W, (r+1)*n/W)`` (floors)."""
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


def _check_args(x: Tensor, y: Tensor, batch_size: int, rank: int, world_size: int,
                augment: bool) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; pass matching tensors")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y on {y.device}; put both on one device")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} is not divisible by world_size={world_size}; "
                         "the global batch is split evenly across ranks")
    if augment and x.ndim != 4:
        raise ValueError(f"augment=True needs images (N, C, H, W), got x of shape {tuple(x.shape)}")


class TensorLoader:
    """Batches of an in-memory dataset, shuffled and augmented per ``(seed, epoch)``.

    Args:
        x: (N, C, H, W) uint8 images or (N, T) int64 token windows, on the training device.
        y: (N,) or (N, T) int64 targets on the same device.
        batch_size: the GLOBAL batch size ``B`` (each rank yields ``B / world_size`` rows).
        shuffle: draw a fresh permutation per epoch (else file order).
        augment: random crop with zero padding 4 and random horizontal flip (images only).
        mean, std: per-channel statistics of ``x / 255``; ``None`` = yield ``x`` unchanged.
        seed: with the epoch, determines order and augmentation.
        drop_last: drop the last global batch if it has fewer than ``B`` rows.
        rank, world_size: this process's share of each global batch (DDP).

    ``set_epoch(e)`` selects epoch ``e``; a completed pass advances the epoch by one, so a plain
    ``for`` loop over epochs sees fresh orders and a resumed run calls ``set_epoch``.
    """

    pad = 4

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool, augment: bool,
                 mean: Sequence[float] | None, std: Sequence[float] | None, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        _check_args(x, y, batch_size, rank, world_size, augment)
        if (mean is None) != (std is None):
            raise ValueError("mean and std must both be given or both be None")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last = seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._mean = self._std = None
        if mean is not None and std is not None:
            if x.ndim != 4 or len(mean) != x.shape[1] or len(std) != x.shape[1]:
                raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries but x has shape "
                                 f"{tuple(x.shape)}; give one value per channel")
            self._mean = torch.tensor(mean, dtype=torch.float32, device=x.device)
            self._std = torch.tensor(std, dtype=torch.float32, device=x.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order/augmentation the next pass uses."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch} must be >= 0")
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_plan(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(perm, offsets, flips) for the current epoch, drawn on CPU from (seed, epoch)."""
        n = self.x.shape[0]
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        perm = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if not self.augment:
            return perm, None, None
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        return perm, offsets, flips

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        perm, offsets, flips = self._epoch_plan()
        device = self.x.device
        perm_d = perm.to(device)  # one host-to-device copy per epoch, none per batch
        if offsets is not None and flips is not None:
            offsets, flips = offsets.to(device), flips.to(device)
        for k in range(len(self)):
            lo = k * self.batch_size
            n_k = min(self.batch_size, perm.shape[0] - lo)
            part = rank_slice(n_k, self.rank, self.world_size)
            rows = slice(lo + part.start, lo + part.stop)
            idx = perm_d[rows]
            xb, yb = self.x[idx], self.y[idx]
            if offsets is not None and flips is not None:
                xb = crop_flip(xb, self.pad, offsets[rows], flips[rows])
            if self._mean is not None and self._std is not None:
                xb = normalise(xb, self._mean, self._std)
            yield xb, yb
        self.epoch += 1
