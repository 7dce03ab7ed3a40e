"""ImageNet (ILSVRC-2012) streamed from ``train/`` and ``val/`` folders of class folders of JPEGs.

Images are decoded with PIL in ``torch.utils.data.DataLoader`` workers and transformed as in
the paper's ImageNet runs (Bernstein et al. 2023, §experiments; the standard ResNet recipe):

* train: random-resized-crop — pick area fraction ``a ~ U(0.08, 1)`` and aspect ratio ``r`` with
  ``log r ~ U(log 3/4, log 4/3)``, box ``w = sqrt(a r A)``, ``h = sqrt(a A / r)`` at a uniform
  position (10 tries, else the largest centred box with ``r`` clipped to the range), resized to
  ``crop`` x ``crop`` (bilinear); then a horizontal flip with probability 1/2;
* val: resize the shorter side to ``resize`` (bilinear), centre crop ``crop`` x ``crop``.

Every random choice for sample ``i`` in epoch ``e`` comes from a generator seeded with a number
drawn, with the permutation, from ``epoch_seed(seed, e)``: batches do not depend on the number of
workers, and the DDP split is the one of :class:`~hyperfree.data.TensorLoader`.

A file that cannot be decoded is a :class:`DataError` naming it, with or without workers: a
worker hands the error back as a value (the DataLoader would re-raise it as "Caught DataError
in DataLoader worker process 0", with the file's name buried in a traceback).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ._errors import DataError
from .loader import epoch_seed, normalise, rank_slice

__all__ = ["scan_image_folder", "random_resized_crop_box", "center_crop_box", "ImageFolder",
           "ImageNetLoader", "ImageNetFactory"]

_EXTENSIONS = (".jpeg", ".jpg", ".png")


def scan_image_folder(root: Path, classes: Sequence[str] | None = None
                      ) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class names, [(file path, class index)]) of ``root/<class>/<image>``."""
    if not root.is_dir():
        raise DataError(f"{root} not found; put the ImageNet train/ and val/ folders of class "
                        "folders (e.g. train/n01440764/*.JPEG) under data_dir")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if classes is None:
        classes = found
    elif not set(found) <= set(classes):
        extra = sorted(set(found) - set(classes))[0]
        raise DataError(f"{root / extra}: class folder not in train/; val/ must use the train "
                        "class names (run the usual valprep to sort val into class folders)")
    index = {c: i for i, c in enumerate(classes)}
    samples = [(os.path.join(root, c, f), index[c]) for c in found
               for f in sorted(os.listdir(root / c)) if f.lower().endswith(_EXTENSIONS)]
    if not samples:
        raise DataError(f"{root}: no .JPEG/.jpg/.png images in its class folders; check data_dir")
    return list(classes), samples


def random_resized_crop_box(w: int, h: int, gen: torch.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)
                            ) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random-resized-crop box in a ``w`` x ``h`` image."""
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        a = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        r = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(u[2] * (w - cw + 1)), int(u[3] * (h - ch + 1))
            return left, top, left + cw, top + ch
    r_img = w / h
    if r_img < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif r_img > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def center_crop_box(w: int, h: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred ``size`` x ``size`` box."""
    left, top = round((w - size) / 2), round((h - size) / 2)
    return left, top, left + size, top + size


class ImageFolder(Dataset):
    """``dataset[(i, sample_seed)]`` -> (uint8 (3, crop, crop), label), decoded and transformed."""

    def __init__(self, samples: list[tuple[str, int]], *, train: bool, crop: int = 224,
                 resize: int = 256) -> None:
        self.samples, self.train, self.crop, self.resize = samples, train, crop, resize

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self, path: str) -> Image.Image:
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: cannot decode image ({err}); remove or replace the "
                            "file") from err

    def transform(self, img: Image.Image, gen: torch.Generator) -> Image.Image:
        """The train or val transform of one PIL image (see the module docstring)."""
        w, h = img.size
        if self.train:
            box = random_resized_crop_box(w, h, gen)
            img = img.resize((self.crop, self.crop), Image.BILINEAR, box=box)
            if torch.rand(1, generator=gen).item() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            return img
        s = self.resize / min(w, h)
        img = img.resize((max(self.resize, round(w * s)), max(self.resize, round(h * s))),
                         Image.BILINEAR)
        return img.crop(center_crop_box(*img.size, self.crop))

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, sample_seed = key
        path, label = self.samples[index]
        img = self.transform(self._open(path), torch.Generator().manual_seed(sample_seed))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return x.contiguous(), label


class _Failed:
    """A sample (or batch) whose file could not be read; ``message`` names the file."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Reported(Dataset):
    """``dataset`` whose DataErrors come back as :class:`_Failed` values (worker side)."""

    def __init__(self, dataset: ImageFolder) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int] | _Failed:
        try:
            return self.dataset[key]
        except DataError as err:
            return _Failed(str(err))


class _Collate:
    """Stack samples; an empty rank share (last partial batch, DDP) gives empty tensors; a
    failed sample makes the whole batch that failure."""

    def __init__(self, crop: int) -> None:
        self.crop = crop

    def __call__(self, batch: list[Any]) -> tuple[Tensor, Tensor] | _Failed:
        failed = next((b for b in batch if isinstance(b, _Failed)), None)
        if failed is not None:
            return failed
        if not batch:
            return (torch.empty(0, 3, self.crop, self.crop, dtype=torch.uint8),
                    torch.empty(0, dtype=torch.int64))
        return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


class ImageNetLoader:
    """Streamed batches with the :class:`~hyperfree.data.TensorLoader` interface and DDP split."""

    def __init__(self, dataset: ImageFolder, batch_size: int, *, shuffle: bool,
                 mean: Sequence[float], std: Sequence[float], device: torch.device,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"batch_size={batch_size}, rank={rank}, world_size={world_size}: "
                             "need batch_size >= 1 and 0 <= rank < world_size")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} is not divisible by world_size={world_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.seed, self.drop_last, self.rank, self.world_size = seed, drop_last, rank, world_size
        self.num_workers, self.device, self.epoch = num_workers, device, 0
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self._std = torch.tensor(std, dtype=torch.float32, device=device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order/augmentation the next pass uses."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch} must be >= 0")
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batches(self) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``(index, sample_seed)`` for the current epoch."""
        n = len(self.dataset)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        perm = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 1 << 62, (n,), generator=gen)
        out = []
        for k in range(len(self)):
            lo = k * self.batch_size
            part = rank_slice(min(self.batch_size, n - lo), self.rank, self.world_size)
            rows = slice(lo + part.start, lo + part.stop)
            out.append(list(zip(perm[rows].tolist(), seeds[rows].tolist())))
        return out

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(_Reported(self.dataset), batch_sampler=self.batches(),
                            num_workers=self.num_workers,
                            collate_fn=_Collate(self.dataset.crop),
                            pin_memory=self.device.type == "cuda")
        for batch in loader:
            if isinstance(batch, _Failed):
                raise DataError(batch.message)
            xb, yb = batch
            xb = xb.to(self.device, non_blocking=True)
            yield normalise(xb, self._mean, self._std), yb.to(self.device, non_blocking=True)
        self.epoch += 1


class ImageNetFactory:
    """Builds :class:`ImageNetLoader` s over ``root/train`` and ``root/val``."""

    def __init__(self, root: Path, *, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, crop: int = 224, resize: int = 256) -> None:
        self.classes, train = scan_image_folder(root / "train")
        _, val = scan_image_folder(root / "val", self.classes)
        self.train_set = ImageFolder(train, train=True, crop=crop, resize=resize)
        self.val_set = ImageFolder(val, train=False, crop=crop, resize=resize)
        self.mean, self.std, self.device = tuple(mean), tuple(std), device

    def train_loader(self, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                     num_workers: int = 0, drop_last: bool = False) -> ImageNetLoader:
        """Shuffled, augmented training batches."""
        return ImageNetLoader(self.train_set, batch_size, shuffle=True, mean=self.mean,
                              std=self.std, device=self.device, seed=seed, drop_last=drop_last,
                              rank=rank, world_size=world_size, num_workers=num_workers)

    def test_loader(self, batch_size: int, *, rank: int = 0, world_size: int = 1,
                    num_workers: int = 0) -> ImageNetLoader:
        """Validation batches in folder order (resize + centre crop)."""
        return ImageNetLoader(self.val_set, batch_size, shuffle=False, mean=self.mean,
                              std=self.std, device=self.device, rank=rank,
                              world_size=world_size, num_workers=num_workers)
