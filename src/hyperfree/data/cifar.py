"""CIFAR-10 and CIFAR-100 from the official "python version" batches (Krizhevsky 2009).

Each batch file is a pickled dict (written by Python 2) with ``b"data"``: uint8 (n, 3072) rows
of 1024 red, 1024 green, 1024 blue values (32x32, row-major), and ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` (CIFAR-100) lists of ints. The pickles are read by :class:`SafeUnpickler`,
whose ``find_class`` resolves only the numpy array reconstruction the official files need (plus
a latin-1-only ``_codecs.encode``, which Python 3 uses for bytes at protocol 2), so a
crafted file cannot run code (e.g. ``os.system``): it raises :class:`DataError` instead.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._errors import DataError

__all__ = ["SafeUnpickler", "safe_load_pickle", "load_cifar_split", "CIFAR_LAYOUT"]


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,  # bytes in protocol-2 pickles written by Python 3
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that builds numpy arrays, dicts, lists, str/bytes and numbers, nothing else."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"{self.path}: pickle asks for {module}.{name}, which a CIFAR batch "
                            "never needs; refusing to load it, use the official file") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.path}: pickle uses persistent ids; not an official CIFAR batch")


def safe_load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`; any failure is a :class:`DataError`."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{path} not found; pass download=True (--download) or extract the "
                        "official CIFAR python archive into data_dir") from err
    except Exception as err:  # pickle raises many types on corrupt input
        raise DataError(f"{path}: corrupt pickle ({type(err).__name__}: {err}); delete it and "
                        "download again") from err


CIFAR_LAYOUT: dict[str, dict[str, Any]] = {
    "cifar10": {"folder": "cifar-10-batches-py", "label_key": b"labels", "num_classes": 10,
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "archive": "cifar-10-python.tar.gz"},
    "cifar100": {"folder": "cifar-100-python", "label_key": b"fine_labels", "num_classes": 100,
                 "train": ["train"], "test": ["test"], "archive": "cifar-100-python.tar.gz"},
}


def _parse_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict) or b"data" not in obj or label_key not in obj:
        raise DataError(f"{path}: expected a dict with b'data' and {label_key!r}; not an "
                        "official CIFAR batch")
    data, labels = obj[b"data"], np.asarray(obj[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 (n, 3072), got "
                        f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {labels.shape} labels for {data.shape[0]} images; corrupt file")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside [0, {num_classes}); wrong or corrupt file")
    return data, labels


def load_cifar_split(root: Path, name: str, split: str, *,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    """(uint8 (N, 3, 32, 32), int64 (N,)) of ``split`` from ``root/<official folder>``."""
    spec = CIFAR_LAYOUT[name]
    folder = root / spec["folder"]
    parts = [_parse_batch(folder / f, spec["label_key"], spec["num_classes"])
             for f in spec[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(data).view(-1, 3, 32, 32).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return x, y
