"""Shared helpers of the training-harness tests: tiny in-memory datasets and a DDP worker."""
from __future__ import annotations

from typing import Any

import torch

from hyperfree.data import DataBundle, DatasetInfo
from hyperfree.train import Callback, StepInfo, TrainConfig


def tiny_image_bundle(n_train: int = 64, n_test: int = 32, channels: int = 1, size: int = 8,
                      classes: int = 4, seed: int = 0) -> DataBundle:
    """Random uint8 images whose label is a function of the mean brightness (learnable)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, channels, size, size), generator=gen,
                      dtype=torch.uint8)
    y = (x.float().mean(dim=(1, 2, 3)) / 256 * classes).long().clamp_(0, classes - 1)
    info = DatasetInfo("tiny", "image", classes, channels, size, (0.5,) * channels,
                       (0.3,) * channels, False)
    return DataBundle(info, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def tiny_text_bundle(n_train: int = 32, n_test: int = 8, seq: int = 6, vocab: int = 5
                     ) -> DataBundle:
    """Random token windows with next-token targets (x shifted by one)."""
    gen = torch.Generator().manual_seed(0)
    stream = torch.randint(0, vocab, (n_train + n_test, seq + 1), generator=gen)
    x, y = stream[:, :-1].contiguous(), stream[:, 1:].contiguous()
    info = DatasetInfo("tinytext", "text", vocab, 0, 0, None, None, False,
                       [chr(97 + i) for i in range(vocab)])
    return DataBundle(info, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def tiny_config(**changes: Any) -> TrainConfig:
    """A fast FCN config (depth 3, width 16) for in-memory runs without files."""
    base = dict(arch="fcn", depth=3, width=16, train_bs=16, test_bs=16, epochs=2,
                progress=False, plots=False, device="cpu", out_dir=None)
    base.update(changes)
    return TrainConfig(**base)


def ddp_worker(rank: int, world_size: int, port: int, steps: int, out_file: str,
               optimizer: str = "agd") -> None:
    """One rank of the DDP equivalence test: train ``steps`` steps, rank 0 saves weights."""
    from hyperfree.train import DistContext, close_distributed, init_distributed, train

    torch.set_num_threads(1)
    ctx = init_distributed(DistContext(rank=rank, world_size=world_size), device_type="cpu",
                           init_method=f"tcp://127.0.0.1:{port}", timeout_s=60)
    try:
        cfg = tiny_config(epochs=1, limit_batches=steps, train_bs=32, optimizer=optimizer)
        history = train(cfg, dist=ctx, data=tiny_image_bundle())
        if rank == 0:
            torch.save({"weights": history.model.state_dict(), "records": history.records},
                       out_file)
    finally:
        close_distributed(ctx)


class InterruptAt(Callback):
    """Raise KeyboardInterrupt (Ctrl-C) at the end of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, info: StepInfo) -> None:
        if info.global_step == self.step:
            raise KeyboardInterrupt
