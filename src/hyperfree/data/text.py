"""Character-level text datasets (tinyshakespeare or any UTF-8 file).

The text is read as UTF-8, the vocabulary is its sorted set of characters, and the encoded
int64 stream ``s`` (length ``n``) is split at ``floor(0.9 n)`` into train and test. Each split
becomes non-overlapping windows of ``T = seq_len`` characters: window ``i`` is
``x_i = s[i*T : i*T + T]`` with next-character targets ``y_i = s[i*T + 1 : i*T + T + 1]``.

Test windows are this fixed grid. Training uses :class:`ShiftedWindows`: the same kind of grid,
shifted by an offset ``o_e`` in ``[0, T)`` drawn per epoch from ``(seed, e)``, so every epoch
sees different window boundaries (and every character, in time, every context position).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ._errors import DataError
from .loader import TensorLoader, epoch_seed

__all__ = ["find_text_file", "build_vocab", "encode", "windows", "read_text_splits", "load_text",
           "ShiftedWindows"]

_SHIFT_SALT = 0x51F7_0FF5E7  # separates the offset's generator from the permutation's


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


def read_text_splits(data_dir: Path, *, seq_len: int) -> tuple[list[str], Tensor, Tensor]:
    """(vocab, train stream, test stream) of the text at ``data_dir``, int64 on the CPU.

    Raises DataError if the file is missing, not UTF-8, or too short: the train split must hold
    at least ``2 T`` characters (one window at every offset), the test split ``T + 1``.
    """
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
    if train.shape[0] < 2 * seq_len or test.shape[0] <= seq_len:
        raise DataError(f"{path}: {stream.shape[0]} characters is too short for seq_len={seq_len} "
                        "(the 90% train split needs 2 seq_len characters, the 10% test split "
                        "seq_len + 1); use a longer text or a smaller seq_len")
    return vocab, train, test


def load_text(data_dir: Path, *, seq_len: int,
              device: torch.device) -> tuple[list[str], Tensor, Tensor, Tensor, Tensor]:
    """(vocab, train_x, train_y, test_x, test_y) of the text at ``data_dir`` (offset-0 grids)."""
    vocab, train, test = read_text_splits(data_dir, seq_len=seq_len)
    tx, ty = windows(train, seq_len)
    vx, vy = windows(test, seq_len)
    return vocab, tx.to(device), ty.to(device), vx.to(device), vy.to(device)


class ShiftedWindows:
    """Training batches of ``T``-windows of a token stream on a grid shifted every epoch.

    For a stream ``s`` of length ``L`` and epoch ``e`` with offset ``o_e`` (:meth:`offset`)::

        x_i = s[o_e + i T : o_e + i T + T],  y_i = s[o_e + i T + 1 : o_e + i T + T + 1]
        for i < N = (L - T) // T              # the same N for every o in [0, T)

    and the ``N`` windows are batched exactly as :class:`~hyperfree.data.TensorLoader` batches
    them (its permutation of epoch ``e`` for ``seed``, its DDP split and ``drop_last``). Order
    and offset are pure functions of ``(seed, e)``, so a resumed run replays an epoch exactly.
    ``set_epoch`` and ``len`` behave as TensorLoader's.
    """

    def __init__(self, stream: Tensor, seq_len: int, batch_size: int, *, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if stream.dim() != 1 or stream.shape[0] < 2 * seq_len or seq_len < 1:
            raise ValueError(f"need a 1-D stream of at least 2 seq_len tokens, got shape "
                             f"{tuple(stream.shape)} with seq_len={seq_len}")
        self.stream, self.seq_len = stream, seq_len
        self.num_windows = (stream.shape[0] - seq_len) // seq_len
        self.seed, self.epoch = seed, 0
        self._loader_args = dict(batch_size=batch_size, shuffle=True, augment=False, mean=None,
                                 std=None, seed=seed, drop_last=drop_last, rank=rank,
                                 world_size=world_size)
        self._loader = self._make_loader(0)  # validates the batching arguments now

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose offset and order the next pass uses."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch} must be >= 0")
        self.epoch = epoch

    def offset(self, epoch: int) -> int:
        """``o_e`` in ``[0, T)``: one draw of a CPU generator seeded from ``(seed, epoch)``."""
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch) ^ _SHIFT_SALT)
        return int(torch.randint(0, self.seq_len, (1,), generator=gen))

    def windows(self, epoch: int) -> tuple[Tensor, Tensor]:
        """(x, y), each (N, T): epoch ``epoch``'s windows in stream order (views, no copy)."""
        o, n, T = self.offset(epoch), self.num_windows, self.seq_len
        return (self.stream[o : o + n * T].view(n, T),
                self.stream[o + 1 : o + 1 + n * T].view(n, T))

    def _make_loader(self, epoch: int) -> TensorLoader:
        x, y = self.windows(epoch)
        loader = TensorLoader(x, y, **self._loader_args)
        loader.set_epoch(epoch)
        return loader

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._make_loader(self.epoch)
        self.epoch += 1
