"""ImageNet folders of JPEGs (written here, tiny): labels follow sorted class folders; train
batches are random-resized-crop + flip at 224, val batches resize-256 + centre-crop 224,
normalised on the way out; batches are identical for 0 and 2 DataLoader workers and across a
2-rank split; corrupt JPEGs and val classes missing from train raise DataError naming the file.

Run: .venv/bin/python -m pytest -q tests/data/test_data_imagenet.py
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from _data_formats import write_imagenet
from hyperfree.data import DataError, load_dataset
from hyperfree.data.imagenet import ImageFolder, random_resized_crop_box


@pytest.fixture
def root(tmp_path):
    write_imagenet(tmp_path, classes=3, per_class=3)
    return tmp_path


def test_bundle_has_loaders_not_tensors(root):
    b = load_dataset("imagenet", data_dir=root)
    assert b.train_x is None and b.test_x is None
    loader = b.train_loader(4, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    xb, yb = batches[0]
    assert xb.shape == (4, 3, 224, 224) and xb.dtype == torch.float32
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    val = torch.cat([y for _, y in b.test_loader(4)])
    assert val.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # folder order, sorted classes


def test_val_transform_is_resize_then_centre_crop(tmp_path):
    img = np.zeros((300, 600, 3), np.uint8)
    img[:, :300] = 255  # left half white: after resize 256x512 and centre crop, half white
    p = tmp_path / "a.png"
    Image.fromarray(img).save(p)
    ds = ImageFolder([(str(p), 0)], train=False)
    x, label = ds[(0, 0)]
    assert x.shape == (3, 224, 224) and label == 0
    assert x[:, :, :100].eq(255).all() and x[:, :, 124:].eq(0).all()


def test_train_transform_deterministic_per_sample_seed(root):
    b = load_dataset("imagenet", data_dir=root)
    ds = b.factory.train_set
    assert torch.equal(ds[(0, 11)][0], ds[(0, 11)][0])
    assert not torch.equal(ds[(0, 11)][0], ds[(0, 12)][0])


def test_random_resized_crop_box_in_range():
    g = torch.Generator().manual_seed(0)
    for w, h in [(500, 375), (64, 300), (300, 64), (224, 224)]:
        for _ in range(50):
            left, top, right, bottom = random_resized_crop_box(w, h, g)
            assert 0 <= left < right <= w and 0 <= top < bottom <= h


def test_workers_and_ranks_do_not_change_batches(root):
    b = load_dataset("imagenet", data_dir=root)
    ref = list(b.train_loader(4, seed=3))
    par = list(b.train_loader(4, seed=3, num_workers=2))
    halves = [list(b.train_loader(4, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for (xr, yr), (xp, yp), (x0, y0), (x1, y1) in zip(ref, par, *halves):
        assert torch.equal(xr, xp) and torch.equal(yr, yp)
        assert torch.equal(torch.cat([x0, x1]), xr) and torch.equal(torch.cat([y0, y1]), yr)
    again = b.train_loader(4, seed=3)
    again.set_epoch(1)
    assert not all(torch.equal(a[0], r[0]) for a, r in zip(again, ref))


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpeg_names_file(root, workers):
    bad = sorted((root / "val" / "n00000001").iterdir())[0]
    bad.write_bytes(b"not a jpeg")
    b = load_dataset("imagenet", data_dir=root)
    with pytest.raises(DataError) as err:
        list(b.test_loader(9, num_workers=workers))
    first_line = str(err.value).splitlines()[0]  # what the CLI prints
    assert str(bad) in first_line and "cannot decode image" in first_line


def test_val_class_missing_from_train(root):
    (root / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match="n99999999: class folder not in train"):
        load_dataset("imagenet", data_dir=root)


def test_missing_train_folder(tmp_path):
    with pytest.raises(DataError, match="train not found"):
        load_dataset("imagenet", data_dir=tmp_path)
