"""TensorLoader and its whole-batch augmentation: each epoch covers every sample exactly once;
order and augmentation are a pure function of (seed, epoch); 2 ranks together yield exactly
the single-process global batch; a crop equals the slice of the zero-padded image and a flip
equals torch.flip; normalisation is (x/255 - mean)/std; text windows pass through unchanged.

Run: .venv/bin/python -m pytest -q tests/data/test_data_loader.py
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperfree.data import TensorLoader
from hyperfree.data.loader import crop_flip, normalise, random_crop, random_flip

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _images(n: int = 37, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return x, torch.arange(n)  # label = row index, so batches reveal which rows they hold


def _loader(x, y, **kw) -> TensorLoader:
    args = dict(batch_size=8, shuffle=True, augment=False, mean=MEAN, std=STD)
    args.update(kw)
    return TensorLoader(x, y, **args)


@pytest.mark.parametrize("drop_last", [False, True])
def test_epoch_covers_every_sample_once(drop_last):
    x, y = _images(37)
    loader = _loader(x, y, drop_last=drop_last)
    seen = torch.cat([yb for _, yb in loader])
    assert len(loader) == (4 if drop_last else 5)
    if drop_last:
        assert seen.numel() == 32 and seen.unique().numel() == 32
    else:
        assert torch.equal(seen.sort().values, y)
    assert not torch.equal(seen[:32], y[:32])  # actually shuffled


def test_order_is_a_pure_function_of_seed_and_epoch():
    x, y = _images()
    a, b = _loader(x, y, seed=1, augment=True), _loader(x, y, seed=1, augment=True)
    a.set_epoch(3), b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = _loader(x, y, seed=1)
    c.set_epoch(4)
    d = _loader(x, y, seed=2)
    d.set_epoch(3)
    order = lambda l: torch.cat([yb for _, yb in l])  # noqa: E731
    a.set_epoch(3)
    assert not torch.equal(order(a), order(c)) and not torch.equal(order(c), order(d))


def test_completed_pass_advances_epoch_like_set_epoch():
    x, y = _images()
    auto, manual = _loader(x, y, seed=5), _loader(x, y, seed=5)
    list(auto)
    manual.set_epoch(1)
    assert auto.epoch == 1
    assert torch.equal(torch.cat([b for _, b in auto]), torch.cat([b for _, b in manual]))


@pytest.mark.parametrize("n", [37, 40])
def test_two_ranks_rebuild_the_single_process_batch(n):
    x, y = _images(n)
    single = list(_loader(x, y, seed=9, augment=True))
    ranks = [list(_loader(x, y, seed=9, augment=True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, *ranks):
        assert torch.equal(torch.cat([x0, x1]), xs) and torch.equal(torch.cat([y0, y1]), ys)
    assert ranks[0][0][0].shape[0] == 4


def test_batch_not_divisible_by_world_size():
    x, y = _images()
    with pytest.raises(ValueError, match="batch_size=9 is not divisible by world_size=2"):
        _loader(x, y, batch_size=9, world_size=2)


def test_bad_arguments_name_the_value():
    x, y = _images()
    with pytest.raises(ValueError, match="rank=2"):
        _loader(x, y, rank=2, world_size=2)
    with pytest.raises(ValueError, match="37 rows but y has 36"):
        _loader(x, y[:36])
    with pytest.raises(ValueError, match="one value per channel"):
        _loader(x, y, mean=(0.5,), std=(0.5,))


def test_crop_equals_slice_of_zero_padded_image():
    x, _ = _images(5)
    offsets = torch.tensor([[0, 0], [8, 8], [3, 5], [8, 0], [4, 4]])
    out = random_crop(x, 4, offsets)
    padded = F.pad(x, (4, 4, 4, 4))
    for b, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], padded[b, :, dy:dy + 8, dx:dx + 8])
    assert torch.equal(out[4], x[4])  # offset (pad, pad) is the identity
    assert out[1, :, -4:, :].eq(0).all()  # bottom-right crop shows the zero padding


def test_flip_equals_torch_flip():
    x, _ = _images(4)
    flips = torch.tensor([True, False, True, False])
    out = random_flip(x, flips)
    assert torch.equal(out[0], torch.flip(x[0], dims=(2,))) and torch.equal(out[1], x[1])


def test_fused_crop_flip_equals_crop_then_torch_flip():
    x, _ = _images(32)
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 9, (32, 2), generator=g)
    flips = torch.rand(32, generator=g) < 0.5
    assert torch.equal(crop_flip(x, 4, offsets, flips),
                       random_flip(random_crop(x, 4, offsets), flips))


def test_augmented_batches_are_crops_and_flips_of_their_source():
    x, y = _images(16)
    loader = _loader(x, y, batch_size=16, augment=True, mean=None, std=None, seed=4)
    (xb, yb), = list(loader)
    padded = F.pad(x, (4, 4, 4, 4))
    offsets_seen, flips_seen = set(), set()
    for i, j in enumerate(yb.tolist()):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                if torch.equal(xb[i], (lambda c: c.flip(2) if f else c)(
                    padded[j, :, dy:dy + 8, dx:dx + 8]))]
        assert hits, f"row {i} is not a crop/flip of sample {j}"
        offsets_seen.add(hits[0][:2]), flips_seen.add(hits[0][2])
    assert len(offsets_seen) > 4 and flips_seen == {0, 1}


def test_normalisation_matches_formula():
    x, y = _images(8)
    (xb, yb), = list(_loader(x, y, shuffle=False))
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    assert xb.dtype == torch.float32
    torch.testing.assert_close(xb, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(normalise(x, torch.tensor(MEAN), torch.tensor(STD)), xb)


def test_text_windows_pass_through_unnormalised():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (10, 16), generator=g)
    y = torch.roll(x, -1, 1)
    loader = TensorLoader(x, y, 4, shuffle=False, augment=False, mean=None, std=None)
    xb, yb = next(iter(loader))
    assert xb.dtype == torch.int64 and torch.equal(xb, x[:4]) and torch.equal(yb, y[:4])
    with pytest.raises(ValueError, match="augment=True needs images"):
        TensorLoader(x, y, 4, shuffle=True, augment=True, mean=None, std=None)
