"""The dataset registry: ``load_dataset(name)`` and ``list_datasets()``.

Each entry pairs a :class:`DatasetInfo` with a builder that finds (or, with ``download=True``,
fetches) the official files under ``data_dir`` and returns a :class:`DataBundle` on ``device``.
Default ``data_dir``: the vendored copy for Fashion-MNIST, ``./data/<name>`` for the other image
datasets, none for text (the caller passes the file).
"""
from __future__ import annotations

import dataclasses
import importlib.resources
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch

from hyperfree._registry import Registry

from ._types import DataBundle, DataError, DatasetInfo, as_device
from .cifar import CIFAR_LAYOUT, load_cifar_split
from .download import download_file, safe_extract_tar
from .idx import IDX_FILES, load_idx_split
from .imagenet import ImageNetFactory
from .text import read_text_splits, windows

__all__ = ["load_dataset", "list_datasets", "get_dataset_info"]


@dataclasses.dataclass(frozen=True)
class _Request:
    root: Path
    download: bool
    mirror: str | None
    device: torch.device
    seq_len: int


Builder = Callable[[DatasetInfo, _Request], DataBundle]


def _idx_builder(info: DatasetInfo, req: _Request) -> DataBundle:
    if req.download:
        for stem in (s for pair in IDX_FILES.values() for s in pair):
            if not (req.root / stem).is_file() and not (req.root / (stem + ".gz")).is_file():
                download_file(info.name, stem + ".gz", req.root, mirror=req.mirror)
    with ThreadPoolExecutor(2) as pool:  # zlib releases the GIL: inflate both splits at once
        futures = {s: pool.submit(load_idx_split, req.root, s, dataset=info.name,
                                  num_classes=info.num_classes, device=req.device)
                   for s in ("train", "test")}
        split = {s: f.result() for s, f in futures.items()}
    for s, (x, _) in split.items():
        if tuple(x.shape[2:]) != (info.image_size, info.image_size):
            raise DataError(f"{req.root / IDX_FILES[s][0]}: images are {tuple(x.shape[2:])}, "
                            f"{info.name} has {info.image_size}x{info.image_size}; wrong files")
    return DataBundle(info, *split["train"], *split["test"])


def _cifar_builder(info: DatasetInfo, req: _Request) -> DataBundle:
    spec = CIFAR_LAYOUT[info.name]
    root = req.root
    if root.name == spec["folder"] and not (root / spec["folder"]).is_dir():
        root = root.parent  # data_dir given as the official folder itself
    if req.download and not (root / spec["folder"]).is_dir():
        archive = download_file(info.name, spec["archive"], root, mirror=req.mirror)
        safe_extract_tar(archive, root)
    train = load_cifar_split(root, info.name, "train", device=req.device)
    test = load_cifar_split(root, info.name, "test", device=req.device)
    return DataBundle(info, *train, *test)


def _imagenet_builder(info: DatasetInfo, req: _Request) -> DataBundle:
    if req.download:
        raise DataError(f"{req.root}: ImageNet cannot be downloaded automatically (licence); get "
                        "ILSVRC-2012 from image-net.org and put train/ and val/ there")
    factory = ImageNetFactory(req.root, mean=info.mean or (), std=info.std or (),
                              device=req.device, crop=info.image_size)
    return DataBundle(info, factory=factory)


def _text_builder(info: DatasetInfo, req: _Request) -> DataBundle:
    vocab, train, test = read_text_splits(req.root, seq_len=req.seq_len)
    (tx, ty), (vx, vy) = windows(train, req.seq_len), windows(test, req.seq_len)
    info = dataclasses.replace(info, num_classes=len(vocab), vocab=vocab)
    dev = req.device
    return DataBundle(info, tx.to(dev), ty.to(dev), vx.to(dev), vy.to(dev),
                      train_stream=train.to(dev))


@dataclasses.dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    builder: Builder


_REGISTRY: Registry[_Entry] = Registry("dataset")


def _register(info: DatasetInfo, builder: Builder) -> None:
    _REGISTRY.register(info.name, _Entry(info, builder))


_register(DatasetInfo("fashion-mnist", "image", 10, 1, 28, (0.2860,), (0.3530,), False),
          _idx_builder)
_register(DatasetInfo("mnist", "image", 10, 1, 28, (0.1307,), (0.3081,), False), _idx_builder)
_register(DatasetInfo("cifar10", "image", 10, 3, 32, (0.4914, 0.4822, 0.4465),
                      (0.2023, 0.1994, 0.2010), True), _cifar_builder)
_register(DatasetInfo("cifar100", "image", 100, 3, 32, (0.5071, 0.4867, 0.4408),
                      (0.2675, 0.2565, 0.2761), True), _cifar_builder)
_register(DatasetInfo("imagenet", "image", 1000, 3, 224, (0.485, 0.456, 0.406),
                      (0.229, 0.224, 0.225), False), _imagenet_builder)
_register(DatasetInfo("tinyshakespeare", "text", 0, 0, 0, None, None, False), _text_builder)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return _REGISTRY.names()


def get_dataset_info(name: str) -> DatasetInfo:
    """The static :class:`DatasetInfo` of ``name`` (text: ``num_classes``/``vocab`` unset)."""
    return _REGISTRY.get(name).info


def _default_dir(name: str) -> Path:
    if name == "fashion-mnist":
        return Path(str(importlib.resources.files("hyperfree.data") / "fashion_mnist"))
    if name == "tinyshakespeare":
        raise ValueError("tinyshakespeare needs data_dir= a UTF-8 text file (e.g. "
                         "tinyshakespeare.txt) or a folder holding input.txt")
    return Path("data") / name


def load_dataset(name: str, *, data_dir: str | Path | None = None, download: bool = False,
                 device: torch.device | str = "cpu", mirror: str | None = None,
                 seq_len: int = 128) -> DataBundle:
    """Load dataset ``name`` from ``data_dir`` onto ``device``.

    Image tensors are uint8 (N, C, H, W), labels int64 (N,); text gives int64 (N, seq_len)
    windows and next-char targets (training batches: windows of seq_len on a grid shifted per
    epoch, see ``DataBundle.train_stream``). ImageNet returns loader factories instead of tensors.
    ``download=True`` fetches missing MNIST/Fashion-MNIST/CIFAR files (from ``mirror`` if
    given) with checksum verification. Raises :class:`DataError` for missing/corrupt files.
    """
    entry = _REGISTRY.get(name)
    info, builder = entry.info, entry.builder
    root = Path(data_dir) if data_dir is not None else _default_dir(info.name)
    if info.kind != "text" and not download and not root.exists():
        raise DataError(f"{root} not found; pass data_dir= the folder with the official {name} "
                        "files, or download=True (--download)")
    req = _Request(root, download, mirror, as_device(device), seq_len)
    return builder(info, req)
