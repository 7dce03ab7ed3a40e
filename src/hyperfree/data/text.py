"""Character-level text datasets (tinyshakespeare or any UTF-8 file).

The text is read as UTF-8, the vocabulary is its sorted set of characters, and the encoded
int64 stream ``s`` (length ``n``) is split at ``floor(0.9 n)`` into train and test. Each split
becomes non-overlapping windows of ``T = seq_len`` characters: window ``i`` is
``x_i = s[i*T : i*T + T]`` with next-character targets ``y_i = s[i*T + 1 : i*T + T + 1]``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ._types import DataError

__all__ = ["find_text_file", "build_vocab", "encode", "windows", "load_text"]


def find_text_file(data_dir: Path) -> Path:
    """``data_dir`` itself if it is a file, else ``input.txt`` in it, else its only ``*.txt``."""
    if data_dir.is_file():
        return data_dir
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} not found; pass data_dir= a UTF-8 text file or a folder "
                        "holding input.txt")
    if (data_dir / "input.txt").is_file():
        return data_dir / "input.txt"
    txts = sorted(data_dir.glob("*.txt"))
    if len(txts) != 1:
        raise DataError(f"{data_dir}: found {len(txts)} *.txt files and no input.txt; pass "
                        "data_dir= the text file itself")
    return txts[0]


def build_vocab(text: str) -> list[str]:
    """The sorted list of distinct characters of ``text``."""
    return sorted(set(text))


def encode(text: str, vocab: list[str]) -> Tensor:
    """int64 (len(text),) of vocabulary indices."""
    table = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([table[ch] for ch in text], dtype=torch.int64)


def windows(stream: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """(x, y), each (N, T): non-overlapping windows of ``stream`` and their next-char targets."""
    n = (stream.shape[0] - 1) // seq_len
    x = stream[: n * seq_len].view(n, seq_len)
    y = stream[1 : n * seq_len + 1].view(n, seq_len)
    return x, y


def load_text(data_dir: Path, *, seq_len: int,
              device: torch.device) -> tuple[list[str], Tensor, Tensor, Tensor, Tensor]:
    """(vocab, train_x, train_y, test_x, test_y) of the text at ``data_dir``."""
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be >= 1")
    path = find_text_file(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start}); convert "
                        "it to UTF-8") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror}); check the path") from err
    vocab = build_vocab(text)
    stream = encode(text, vocab)
    cut = int(0.9 * stream.shape[0])
    train, test = stream[:cut], stream[cut:]
    if min(train.shape[0], test.shape[0]) <= seq_len:
        raise DataError(f"{path}: {stream.shape[0]} characters is too short for seq_len={seq_len} "
                        "(the 10% test split needs more than seq_len + 1); use a longer text or "
                        "a smaller seq_len")
    tx, ty = windows(train, seq_len)
    vx, vy = windows(test, seq_len)
    return vocab, tx.to(device), ty.to(device), vx.to(device), vy.to(device)
