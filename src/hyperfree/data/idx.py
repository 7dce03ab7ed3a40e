"""MNIST and Fashion-MNIST from their official IDX files (LeCun et al.; Xiao et al. 2017).

IDX layout (big-endian): two zero bytes, a type code, the number of dimensions ``ndim``, then
``ndim`` uint32 sizes, then the array in C order. Files may be gzip-compressed (detected by the
gzip magic ``1f 8b``, not by the file name). :func:`read_idx` checks the magic, the type code,
``ndim`` and that the payload has exactly ``prod(sizes) * itemsize`` bytes.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._errors import DataError

__all__ = ["read_idx", "load_idx_split", "IDX_FILES"]

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror}); check the path and "
                        "permissions") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: gzip stream is corrupt ({err}); delete it and download "
                            "again") from err
    return raw


def read_idx(path: Path, *, ndim: int, dtype: np.dtype = np.dtype(np.uint8)) -> np.ndarray:
    """Parse one IDX file (raw or gzip) into a native-endian array, validating the header."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: bad IDX magic {data[:4].hex()}; expected 0000<type><ndim>, "
                        "not an IDX file")
    code, nd = data[2], data[3]
    if code not in _IDX_DTYPES or _IDX_DTYPES[code].newbyteorder("=") != dtype.newbyteorder("="):
        raise DataError(f"{path}: IDX type code 0x{code:02x}, expected {dtype} "
                        f"(0x08 for uint8); wrong file?")
    if nd != ndim:
        raise DataError(f"{path}: IDX header has {nd} dimensions, expected {ndim}; wrong file?")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and download again")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=nd, offset=4))
    idt = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * idt.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: size {len(data)} bytes != {expected} from header dims {dims}; "
                        "truncated or corrupt, download again")
    arr = np.frombuffer(data, dtype=idt, offset=header).reshape(dims)
    return arr.astype(idt.newbyteorder("="), copy=True)


def _find(folder: Path, stem: str, dataset: str) -> Path:
    for cand in (folder / stem, folder / (stem + ".gz")):
        if cand.is_file():
            return cand
    raise DataError(f"{folder / (stem + '.gz')} not found; pass download=True (--download) or put "
                    f"the official {dataset} IDX files (raw or .gz) in {folder}")


def load_idx_split(folder: Path, split: str, *, dataset: str, num_classes: int,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """(images uint8 (N, 1, H, W), labels int64 (N,)) of ``split`` in ``{"train", "test"}``."""
    img_stem, lab_stem = IDX_FILES[split]
    img_path, lab_path = _find(folder, img_stem, dataset), _find(folder, lab_stem, dataset)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lab_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{lab_path}: {labels.shape[0]} labels for {images.shape[0]} images in "
                        f"{img_path.name}; the pair does not match, download again")
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{lab_path}: label {int(labels.max())} >= {num_classes} classes; "
                        "wrong or corrupt file")
    x = torch.from_numpy(images).unsqueeze(1).to(device)
    y = torch.from_numpy(labels).long().to(device)
    return x, y
