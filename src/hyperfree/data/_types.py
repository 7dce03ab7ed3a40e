"""The data package's value types: :class:`DataError`, :class:`DatasetInfo`, :class:`DataBundle`."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Literal, Protocol

import torch
from torch import Tensor

from ._errors import DataError

__all__ = ["DataError", "DatasetInfo", "DataBundle", "BatchLoader", "LoaderFactory"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and the training loop need to know about a dataset.

    ``mean``/``std`` are per-channel statistics of ``x / 255`` (``None`` for text: no
    normalisation). ``augment`` says whether training batches get the CIFAR augmentation
    (random crop 32 with zero padding 4, random horizontal flip). ``vocab`` is the sorted
    character vocabulary of a text dataset (``num_classes == len(vocab)``), ``None`` for images.
    For text, ``in_channels`` and ``image_size`` are 0.
    """

    name: str
    kind: Literal["image", "text"]
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augment: bool
    vocab: list[str] | None = None


class BatchLoader(Protocol):
    """The interface of :class:`~hyperfree.data.TensorLoader` and the ImageNet loader."""

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...


class LoaderFactory(Protocol):
    """Builds streamed loaders for datasets that do not fit in memory (ImageNet)."""

    def train_loader(self, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                     num_workers: int = 0, drop_last: bool = False) -> BatchLoader: ...

    def test_loader(self, batch_size: int, *, rank: int = 0, world_size: int = 1,
                    num_workers: int = 0) -> BatchLoader: ...


@dataclasses.dataclass
class DataBundle:
    """A loaded dataset.

    Tensor datasets hold ``train_x``/``test_x`` (images: uint8 ``(N, C, H, W)``; text: int64
    ``(N, T)``) and ``train_y``/``test_y`` (int64 ``(N,)``, or ``(N, T)`` next-char targets) on
    the training device. Streamed datasets (ImageNet) leave them ``None`` and set ``factory``.
    Either way :meth:`train_loader` / :meth:`test_loader` give batch loaders with the
    :class:`~hyperfree.data.TensorLoader` interface.

    A text dataset may also hold ``train_stream``, the int64 ``(L,)`` training text: training
    batches then come from :class:`~hyperfree.data.text.ShiftedWindows` (windows of
    ``T = train_x.shape[1]`` on a grid shifted per epoch) and ``train_x``/``train_y`` are only
    the offset-0 grid. Test batches are always ``test_x``/``test_y``.
    """

    info: DatasetInfo
    train_x: Tensor | None = None
    train_y: Tensor | None = None
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    factory: LoaderFactory | None = None
    train_stream: Tensor | None = None

    def train_loader(self, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                     num_workers: int = 0, drop_last: bool = False) -> BatchLoader:
        """Shuffled (and, if ``info.augment``, augmented) training batches; see TensorLoader.

        ``num_workers`` is used by streamed datasets (ImageNet) only.
        """
        if self.factory is not None:
            return self.factory.train_loader(batch_size, seed=seed, rank=rank,
                                             world_size=world_size, num_workers=num_workers,
                                             drop_last=drop_last)
        from .loader import TensorLoader

        if self.train_x is None or self.train_y is None:
            raise ValueError("DataBundle has neither train_x/train_y nor a factory; build it "
                             "with load_dataset")
        if self.train_stream is not None:
            from .text import ShiftedWindows

            return ShiftedWindows(self.train_stream, self.train_x.shape[1], batch_size,
                                  seed=seed, drop_last=drop_last, rank=rank,
                                  world_size=world_size)
        return TensorLoader(self.train_x, self.train_y, batch_size, shuffle=True,
                            augment=self.info.augment, mean=self.info.mean, std=self.info.std,
                            seed=seed, drop_last=drop_last, rank=rank, world_size=world_size)

    def test_loader(self, batch_size: int, *, rank: int = 0, world_size: int = 1,
                    num_workers: int = 0) -> BatchLoader:
        """Test batches in file order, never augmented, last partial batch kept."""
        if self.factory is not None:
            return self.factory.test_loader(batch_size, rank=rank, world_size=world_size,
                                            num_workers=num_workers)
        from .loader import TensorLoader

        if self.test_x is None or self.test_y is None:
            raise ValueError("DataBundle has neither test_x/test_y nor a factory; build it "
                             "with load_dataset")
        return TensorLoader(self.test_x, self.test_y, batch_size, shuffle=False, augment=False,
                            mean=self.info.mean, std=self.info.std, rank=rank,
                            world_size=world_size)


def as_device(device: torch.device | str) -> torch.device:
    """``torch.device(device)``; a ValueError naming the value for nonsense names."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device; use e.g. 'cpu' or "
                         "'cuda:0'") from err
