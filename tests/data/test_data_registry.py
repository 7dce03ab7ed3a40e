"""Registry-wide checks: every name in list_datasets() has a writer here that builds tiny files
in its official format, loads through load_dataset, and yields consistent DatasetInfo, tensors
and loader batches (normalised float images / int64 text, labels < num_classes); missing
data_dir and unknown names fail with one-line errors.

Run: .venv/bin/python -m pytest -q tests/data/test_data_registry.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from _data_formats import write_cifar, write_idx_dataset, write_imagenet, write_text
from hyperfree.data import (DataBundle, DataError, DatasetInfo, TensorLoader, get_dataset_info,
                            list_datasets, load_dataset)


def _text(root: Path) -> Path:
    write_text(root / "input.txt", 3000)
    return root


WRITERS: dict[str, Callable[[Path], Path]] = {
    "fashion-mnist": lambda r: (write_idx_dataset(r, size=28), r)[1],
    "mnist": lambda r: (write_idx_dataset(r, size=28, gz=False), r)[1],
    "cifar10": lambda r: (write_cifar(r, "cifar10", n=4), r)[1],
    "cifar100": lambda r: (write_cifar(r, "cifar100", n=12), r)[1],
    "imagenet": lambda r: (write_imagenet(r, classes=2, per_class=2), r)[1],
    "tinyshakespeare": _text,
}


def test_every_registered_dataset_has_a_writer():
    assert set(list_datasets()) == set(WRITERS)
    assert {"fashion-mnist", "mnist", "cifar10", "cifar100", "imagenet",
            "tinyshakespeare"} <= set(list_datasets())


def _check_info(info: DatasetInfo, b: DataBundle) -> None:
    if info.kind == "text":
        assert info.mean is None and info.vocab is not None
        assert info.num_classes == len(info.vocab) and not info.augment
        return
    assert info.mean is not None and info.std is not None and info.vocab is None
    assert len(info.mean) == len(info.std) == info.in_channels
    if b.train_x is not None:
        assert b.train_x.dtype == torch.uint8
        assert b.train_x.shape[1:] == (info.in_channels, info.image_size, info.image_size)
        assert int(b.train_y.max()) < info.num_classes and b.train_y.dtype == torch.int64


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_loads_and_batches(tmp_path, name):
    data_dir = WRITERS[name](tmp_path)
    b = load_dataset(name, data_dir=data_dir, seq_len=32)
    info = b.info
    assert info.name == name and info == b.info
    static = get_dataset_info(name)
    assert (static.kind, static.in_channels, static.augment) == (info.kind, info.in_channels,
                                                                info.augment)
    _check_info(info, b)
    train = b.train_loader(4, seed=0)
    # in-memory data -> TensorLoader; text trains on shifted grids of its stream instead
    assert isinstance(train, TensorLoader) == (b.train_x is not None and b.train_stream is None)
    assert (b.train_stream is not None) == (info.kind == "text")
    xb, yb = next(iter(train))
    assert xb.shape[0] == yb.shape[0] == 4
    if info.kind == "image":
        assert xb.dtype == torch.float32
        assert xb.shape[1:] == (info.in_channels, info.image_size, info.image_size)
        assert xb.min() < 0 < xb.max()  # normalised around the dataset mean
    else:
        assert xb.dtype == torch.int64 and xb.shape[1] == 32
    n_test = sum(y.shape[0] for _, y in b.test_loader(4))
    assert n_test == (b.test_y.shape[0] if b.test_y is not None else len(b.factory.val_set))


@pytest.mark.parametrize("name", [n for n in list_datasets()
                                  if get_dataset_info(n).kind == "image"])
def test_missing_data_dir_is_a_data_error(tmp_path, name):
    with pytest.raises(DataError, match="not found"):
        load_dataset(name, data_dir=tmp_path / "absent")


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")


def test_bad_device_name(tmp_path):
    with pytest.raises(ValueError, match="device='gpu9'"):
        load_dataset("mnist", data_dir=WRITERS["mnist"](tmp_path), device="gpu9")
