"""CIFAR-10/100 python batches: files written here in the official layout load with the right
pixel order and labels (fine labels for CIFAR-100); the restricted unpickler refuses crafted
pickles (os.system, eval) without running them; corrupt or missing batches name the file.

Run: .venv/bin/python -m pytest -q tests/data/test_data_cifar.py
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from _data_formats import write_cifar
from hyperfree.data import DataError, load_dataset
from hyperfree.data.cifar import safe_load_pickle


@pytest.mark.parametrize("name,key", [("cifar10", b"labels"), ("cifar100", b"fine_labels")])
def test_cifar_loads_official_layout(tmp_path, name, key):
    written = write_cifar(tmp_path, name, n=6, seed=1)
    b = load_dataset(name, data_dir=tmp_path)
    n_train = 6 * len(written["train"])
    assert b.train_x.shape == (n_train, 3, 32, 32) and b.train_x.dtype == torch.uint8
    assert b.test_x.shape == (6, 3, 32, 32)
    first = written["train"][0]
    row = first[b"data"][2]
    # row = 1024 R, 1024 G, 1024 B values, each 32x32 row-major
    assert b.train_x[2, 1, 5, 7].item() == row[1024 + 5 * 32 + 7]
    assert torch.equal(b.train_x[2], torch.from_numpy(row.reshape(3, 32, 32)))
    labels = [lab for batch in written["train"] for lab in batch[key]]
    assert b.train_y.tolist() == labels and b.train_y.dtype == torch.int64
    assert b.test_y.tolist() == written["test"][0][key]


def test_data_dir_may_be_the_official_folder(tmp_path):
    write_cifar(tmp_path, "cifar10", n=2)
    b = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py")
    assert b.train_x.shape[0] == 10


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_crafted_pickle_is_refused_and_not_run(tmp_path, payload):
    write_cifar(tmp_path, "cifar10", n=2)
    marker = tmp_path / "pwned"
    evil = _System(f"touch {marker}") if payload == "system" else _Eval()
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3.*(system|eval)"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_safe_unpickler_still_reads_numpy_arrays(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 3, 4):
        p = tmp_path / f"a{proto}"
        p.write_bytes(pickle.dumps({b"data": arr, b"labels": [1, 2, 3]}, protocol=proto))
        obj = safe_load_pickle(p)
        assert np.array_equal(obj[b"data"], arr) and obj[b"labels"] == [1, 2, 3]


def test_truncated_pickle_names_file(tmp_path):
    write_cifar(tmp_path, "cifar100", n=2)
    bad = tmp_path / "cifar-100-python" / "test"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError, match=r"cifar-100-python/test: corrupt"):
        load_dataset("cifar100", data_dir=tmp_path)


def test_wrong_shape_names_file(tmp_path):
    write_cifar(tmp_path, "cifar10", n=2)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test_batch.*3072"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_missing_batch_names_file(tmp_path):
    write_cifar(tmp_path, "cifar10", n=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match=r"data_batch_5 not found.*download"):
        load_dataset("cifar10", data_dir=tmp_path)
