"""IDX loading (MNIST / Fashion-MNIST): gzip and raw files written here in the official format
load bit-exactly; bad magic, type code, dimensions, sizes and missing files raise DataError
naming the file; the vendored Fashion-MNIST loads with the documented shapes and statistics.

Run: .venv/bin/python -m pytest -q tests/data/test_data_idx.py
"""
from __future__ import annotations

import gzip
import struct
import time

import numpy as np
import pytest
import torch

from _data_formats import idx_bytes, write_idx_dataset
from hyperfree.data import DataError, load_dataset
from hyperfree.data.idx import read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_gzip_and_raw(tmp_path, gz):
    written = write_idx_dataset(tmp_path, gz=gz, seed=3)
    b = load_dataset("mnist", data_dir=tmp_path)
    for split, (x, y) in (("train", (b.train_x, b.train_y)), ("test", (b.test_x, b.test_y))):
        images, labels = written[split]
        assert x.dtype == torch.uint8 and x.shape == (len(images), 1, 28, 28)
        assert y.dtype == torch.int64
        assert torch.equal(x[:, 0], torch.from_numpy(images))
        assert torch.equal(y, torch.from_numpy(labels).long())


def test_gzip_detected_by_magic_not_name(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "no-extension"
    p.write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(read_idx(p, ndim=3), arr)


def _corrupt(data: bytes, kind: str) -> bytes:
    if kind == "magic":
        return b"\x01" + data[1:]
    if kind == "dtype":
        return data[:2] + b"\x0d" + data[3:]
    if kind == "ndim":
        return data[:3] + b"\x02" + data[4:]
    if kind == "truncated":
        return data[:-5]
    if kind == "dims":
        return data[:4] + struct.pack(">I", 3) + data[8:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["magic", "dtype", "ndim", "truncated", "dims"])
def test_corrupt_idx_names_file(tmp_path, kind):
    write_idx_dataset(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(_corrupt(bad.read_bytes(), kind))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_corrupt_gzip_stream(tmp_path):
    write_idx_dataset(tmp_path, gz=True)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz.*gzip"):
        load_dataset("mnist", data_dir=tmp_path)


def test_wrong_image_size_is_refused(tmp_path):
    write_idx_dataset(tmp_path, size=20)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: images are \(20, 20\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_count_mismatch(tmp_path):
    write_idx_dataset(tmp_path, gz=False, n_test=20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="19 labels for 20 images"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_out_of_range(tmp_path):
    write_idx_dataset(tmp_path, gz=False, n_test=20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 10, np.uint8)))
    with pytest.raises(DataError, match="label 10"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_file_says_download(tmp_path):
    write_idx_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.*--download"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


def test_vendored_fashion_mnist_loads_fast_with_documented_stats():
    t0 = time.perf_counter()
    b = load_dataset("fashion-mnist")
    elapsed = time.perf_counter() - t0
    assert b.train_x.shape == (60000, 1, 28, 28) and b.test_x.shape == (10000, 1, 28, 28)
    assert b.train_y.bincount().tolist() == [6000] * 10
    x = b.train_x.float() / 255
    assert abs(x.mean().item() - b.info.mean[0]) < 1e-3
    assert abs(x.std().item() - b.info.std[0]) < 1e-3
    assert elapsed < 5.0  # < 1 s on an idle core; slack for the shared test machine
