"""Writers of tiny dataset files in the OFFICIAL formats, shared by the tests in tests/data.

Nothing here reads the real datasets: each writer builds seeded random content, writes it the
way the official release lays it out, and returns the arrays it wrote so tests can compare.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 00 00 08 ndim, big-endian uint32 dims, data."""
    assert arr.dtype == np.uint8
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_dataset(folder: Path, *, n_train: int = 50, n_test: int = 20, size: int = 28,
                      gz: bool = True, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-style IDX files (gzip or raw) in ``folder``; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for stem, arr in zip(IDX_STEMS[split], (images, labels)):
            data = idx_bytes(arr)
            if gz:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
        out[split] = (images, labels)
    return out


def cifar_batch(n: int, num_classes: int, label_key: bytes, rng: np.random.Generator) -> dict:
    """One CIFAR batch dict as in the official pickles (bytes keys, uint8 (n, 3072) rows)."""
    return {b"batch_label": b"testing batch", label_key: rng.integers(0, num_classes, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def write_cifar(root: Path, name: str, *, n: int = 8, seed: int = 0) -> dict[str, list[dict]]:
    """The official python-version folder of ``name`` (cifar10/cifar100) under ``root``."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, key, k = root / "cifar-10-batches-py", b"labels", 10
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    else:
        folder, key, k = root / "cifar-100-python", b"fine_labels", 100
        files = {"train": ["train"], "test": ["test"]}
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[dict]] = {}
    for split, names in files.items():
        out[split] = []
        for fname in names:
            batch = cifar_batch(n, k, key, rng)
            if name == "cifar100":
                batch[b"coarse_labels"] = [c // 5 for c in batch[key]]
            (folder / fname).write_bytes(pickle.dumps(batch, protocol=3))
            out[split].append(batch)
    return out


def tar_gz_of(folder: Path, arcname: str) -> bytes:
    """A .tar.gz holding ``folder`` under ``arcname``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write_imagenet(root: Path, *, classes: int = 3, per_class: int = 3, seed: int = 0) -> None:
    """``root/{train,val}/<wnid>/*.JPEG`` with small random JPEGs of varied sizes."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{split}_{c}_{i}.JPEG", quality=90)


def write_text(path: Path, n_chars: int = 2000, seed: int = 0) -> str:
    """A UTF-8 text file of ``n_chars`` characters (some non-ASCII); returns the text."""
    rng = np.random.default_rng(seed)
    alphabet = list("abcde fgh\nXYZé—")
    text = "".join(rng.choice(alphabet, n_chars))
    path.write_text(text, encoding="utf-8")
    return text
