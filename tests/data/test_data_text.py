"""Char-level text: the vocabulary is the sorted character set, windows decode back to the
text, targets are the next characters, the split is 90/10; a folder with input.txt works;
invalid UTF-8 and too-short texts raise DataError naming the file. Training windows
(ShiftedWindows): epoch e's batches are exactly the N = (L - T) // T windows of the grid at
offset o_e in [0, T), each once; offsets and order are a pure function of (seed, epoch), vary
between epochs, and 2 ranks rebuild the single-process batch. Uses a tiny temp file, and the
shared tinyshakespeare.txt (../shared/data) when it is present.

Run: .venv/bin/python -m pytest -q tests/data/test_data_text.py
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _data_formats import write_text
from hyperfree.data import DataError, load_dataset
from hyperfree.data.text import ShiftedWindows

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


def _rows(x: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r) for r in x.tolist()}


def test_shifted_windows_cover_the_shifted_grid_once_per_epoch():
    T, L = 5, 103
    stream = torch.arange(L)  # token = position, so a window is identified by its first token
    loader = ShiftedWindows(stream, T, 4, seed=3)
    n = (L - T) // T
    assert len(loader) == -(-n // 4)
    offsets = []
    for epoch in range(12):
        loader.set_epoch(epoch)
        xs, ys = zip(*loader)
        x, y = torch.cat(xs), torch.cat(ys)
        o = loader.offset(epoch)
        offsets.append(o)
        assert 0 <= o < T and x.shape == (n, T)
        starts = sorted(x[:, 0].tolist())
        assert starts == [o + i * T for i in range(n)]  # the grid at offset o, each window once
        assert torch.equal(x, stream[x[:, :1] + torch.arange(T)])  # contiguous windows
        assert torch.equal(y, x + 1)  # next-token targets
    assert len(set(offsets)) > 2  # the grid moves between epochs


def test_shifted_windows_are_a_pure_function_of_seed_and_epoch():
    stream = torch.randint(0, 9, (200,), generator=torch.Generator().manual_seed(0))

    def epoch_batches(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = ShiftedWindows(stream, 8, 4, seed=seed)
        loader.set_epoch(epoch)
        return [xb for xb, _ in loader]

    a, b = epoch_batches(1, 2), epoch_batches(1, 2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, epoch_batches(1, 3)))
    assert not all(torch.equal(u, v) for u, v in zip(a, epoch_batches(2, 2)))
    loader = ShiftedWindows(stream, 8, 4, seed=1)  # a completed pass advances the epoch
    list(loader)
    assert loader.epoch == 1


def test_shifted_windows_two_ranks_rebuild_the_single_process_batch():
    stream = torch.arange(300)
    single = ShiftedWindows(stream, 6, 8, seed=5)
    ranks = [ShiftedWindows(stream, 6, 8, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        for loader in (single, *ranks):
            loader.set_epoch(epoch)
        for (xb, _), (x0, _), (x1, _) in zip(single, *ranks):
            assert torch.equal(xb, torch.cat([x0, x1]))


def test_bundle_trains_on_shifted_windows_of_the_train_split(tmp_path):
    write_text(tmp_path / "t.txt", 2000)
    b = load_dataset("tinyshakespeare", data_dir=tmp_path / "t.txt", seq_len=16)
    assert torch.equal(b.train_stream[: b.train_x.numel()], b.train_x.flatten())
    assert b.train_stream.shape == (1800,)
    loader = b.train_loader(10, seed=0)
    assert isinstance(loader, ShiftedWindows) and loader.num_windows == (1800 - 16) // 16
    loader.set_epoch(1)
    o = loader.offset(1)
    train_rows = _rows(b.train_stream[o : o + 111 * 16].view(111, 16))
    assert _rows(torch.cat([xb for xb, _ in loader])) == train_rows


def test_train_split_needs_two_windows(tmp_path):
    write_text(tmp_path / "s.txt", 250)  # train split 225 < 2 * 128
    with pytest.raises(DataError, match=r"s\.txt: 250 characters is too short for seq_len=128"):
        load_dataset("tinyshakespeare", data_dir=tmp_path / "s.txt")
    b = load_dataset("tinyshakespeare", data_dir=tmp_path / "s.txt", seq_len=16)
    assert b.train_x.shape[1] == 16
