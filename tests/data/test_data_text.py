"""Char-level text: the vocabulary is the sorted character set, windows decode back to the
text, targets are the next characters, the split is 90/10; a folder with input.txt works;
invalid UTF-8 and too-short texts raise DataError naming the file. Uses a tiny temp file, and
the shared tinyshakespeare.txt (../shared/data) when it is present.

Run: .venv/bin/python -m pytest -q tests/data/test_data_text.py
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _data_formats import write_text
from hyperfree.data import DataError, load_dataset

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"


def test_windows_vocab_and_split(tmp_path):
    text = write_text(tmp_path / "t.txt", 2000)
    b = load_dataset("tinyshakespeare", data_dir=tmp_path / "t.txt", seq_len=16)
    vocab = b.info.vocab
    assert vocab == sorted(set(text)) and b.info.num_classes == len(vocab)
    assert b.info.kind == "text" and b.info.mean is None
    assert b.train_x.shape == (1799 // 16, 16) and b.train_x.dtype == torch.int64
    decode = lambda t: "".join(vocab[i] for i in t.tolist())  # noqa: E731
    assert decode(b.train_x.flatten()) == text[: b.train_x.numel()]
    assert decode(b.train_y.flatten()) == text[1 : b.train_x.numel() + 1]
    assert decode(b.test_x[0]) == text[1800:1816]
    xb, yb = next(iter(b.test_loader(4)))
    assert torch.equal(xb, b.test_x[:4]) and torch.equal(yb, b.test_y[:4])


def test_folder_with_input_txt(tmp_path):
    text = write_text(tmp_path / "input.txt", 500)
    write_text(tmp_path / "other.txt", 500, seed=1)
    b = load_dataset("tinyshakespeare", data_dir=tmp_path, seq_len=8)
    assert b.info.vocab == sorted(set(text))


def test_invalid_utf8_names_file(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello \xff\xfe world" * 20)
    with pytest.raises(DataError, match=r"bad\.txt: not valid UTF-8"):
        load_dataset("tinyshakespeare", data_dir=p)


def test_too_short_for_seq_len(tmp_path):
    write_text(tmp_path / "s.txt", 100)
    with pytest.raises(DataError, match=r"s\.txt.*seq_len=128"):
        load_dataset("tinyshakespeare", data_dir=tmp_path / "s.txt")


def test_text_needs_data_dir():
    with pytest.raises(ValueError, match="tinyshakespeare needs data_dir"):
        load_dataset("tinyshakespeare")


@pytest.mark.skipif(not SHARED.is_file(), reason="shared tinyshakespeare.txt not present")
def test_shared_tinyshakespeare():
    b = load_dataset("tinyshakespeare", data_dir=SHARED)
    assert b.info.num_classes == 65 and b.train_x.shape[1] == 128
    n = len(SHARED.read_text(encoding="utf-8"))
    assert abs(b.train_x.numel() - 0.9 * n) < 129 and abs(b.test_x.numel() - 0.1 * n) < 129
