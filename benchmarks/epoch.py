"""Epoch time of the training harness against a plain PyTorch loop and a per-sample DataLoader.

    .venv/bin/python benchmarks/epoch.py [--repeats 5] [--threads 2] [--limit-batches N]
        [--preset NAME ...]

Setting: FCN depth 8, width 256 (SPEC §1.2), Fashion-MNIST (vendored, preloaded), batch 128,
one epoch = 469 steps. Three paths, run alternately (repeat r runs each path once) and
summarised by the median over repeats:

* ``harness``: ``hyperfree.train.train()`` with AGD, ``out_dir=None`` (no checkpoint, metrics
  file or figure) and no progress bar; the time is the record's ``train_seconds`` — the training
  part of the epoch only, including the harness's own overheads (TensorLoader batch gather and
  normalisation, device-side metrics, the 4 sampled relative-update measurements). The test
  evaluation that follows each epoch is timed separately (``eval``) and not in the ratio;
  the per-epoch checkpoint save is timed on its own at the end.
* ``plain``: a hand-written loop — ``torch.randperm`` over the same preloaded, already
  normalised float tensor, ``torch.optim.Adam`` (foreach), square loss, ``.item()`` never called.
* ``dataloader``: ``torch.utils.data.DataLoader`` over a Dataset whose ``__getitem__``
  normalises one uint8 image (the per-sample path of the research script), Adam, batch 128.

The ratio harness/plain (target <= 1.15) compares optimisers as well as loops (the paper
preset's step is ≈15% of an epoch on this model, SPEC §4; the spectral default's Newton–Schulz
most of it on a CPU); ``plain-agd`` runs the plain loop with AGD to separate the two;
``--preset NAME`` adds ``plain (AGD NAME)``, the plain loop with another preset, to compare
presets side by side (the default's against the one before it, say). Prints a table and the
machine (CPU, threads, torch, load average: the machine is shared, so read ratios of
interleaved runs, not absolute times).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from hyperfree.data import load_dataset
from hyperfree.models import create_model
from hyperfree.optim import AGD, DEFAULT_PRESET, PRESETS
from hyperfree.train import TrainConfig, train
from hyperfree.train.losses import square_loss

MEAN, STD = 0.2860, 0.3530


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("fcn", in_channels=1, num_classes=10, image_size=28, depth=8, width=256)


def harness_epoch(bundle: object, seed: int, limit: int | None) -> tuple[float, float]:
    """(train seconds, total epoch seconds) of one harness epoch."""
    cfg = TrainConfig(epochs=1, seed=seed, progress=False, plots=False, out_dir=None,
                      device="cpu", limit_batches=limit)
    rec = train(cfg, data=bundle).records[0]
    return rec["train_seconds"], rec["seconds"]


def plain_epoch(x: Tensor, y: Tensor, seed: int, limit: int | None, optimizer: str,
                preset: str = DEFAULT_PRESET) -> float:
    """Seconds of one hand-written epoch over preloaded normalised tensors (``optimizer``
    ``"adam"`` or ``"agd"``, the latter with ``preset``)."""
    model = _model(seed)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    else:
        opt = AGD(model, preset=preset)
        opt.init_weights()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=gen)
    steps = (x.shape[0] + 127) // 128 if limit is None else limit
    t0 = time.perf_counter()
    for k in range(steps):
        idx = perm[k * 128:(k + 1) * 128]
        loss = square_loss(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


class PerSampleDataset(torch.utils.data.Dataset):
    """The research-script path: normalise one uint8 image per ``__getitem__``."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return (self.x[i].float() / 255 - MEAN) / STD, self.y[i]


def dataloader_epoch(x: Tensor, y: Tensor, seed: int, limit: int | None) -> float:
    """Seconds of one epoch through a per-sample DataLoader (Adam)."""
    model = _model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    loader = torch.utils.data.DataLoader(PerSampleDataset(x, y), batch_size=128, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    for k, (xb, yb) in enumerate(loader):
        if limit is not None and k >= limit:
            break
        loss = square_loss(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def checkpoint_seconds(bundle: object, repeats: int) -> float:
    """Median seconds of one atomic checkpoint save (model + AGD state + metrics) to a temp dir."""
    import tempfile
    from pathlib import Path

    from hyperfree.train import save_checkpoint

    history = train(TrainConfig(epochs=1, progress=False, plots=False, out_dir=None,
                                device="cpu", limit_batches=1), data=bundle)
    payload = {"model": history.model.state_dict(), "stepper": history.stepper.state_dict(),
               "metrics": history.records}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            save_checkpoint(Path(tmp) / "checkpoint.pt", payload)
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; load average {load}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--limit-batches", type=int, default=None, help="steps per epoch (test)")
    ap.add_argument("--skip-dataloader", action="store_true", help="omit the slow path")
    ap.add_argument("--preset", action="append", default=[], choices=list(PRESETS),
                    metavar="NAME", help="also the plain loop with AGD's preset NAME "
                    "(repeatable; the default's is 'plain (AGD)')")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_dataset("fashion-mnist")
    x = (bundle.train_x.float() / 255 - MEAN) / STD
    y = bundle.train_y
    paths: dict[str, Callable[[int], float]] = {
        "plain (Adam)": lambda s: plain_epoch(x, y, s, args.limit_batches, "adam"),
        "plain (AGD)": lambda s: plain_epoch(x, y, s, args.limit_batches, "agd"),
    }
    for name in args.preset:
        paths[f"plain (AGD {name})"] = (
            lambda s, name=name: plain_epoch(x, y, s, args.limit_batches, "agd", name))
    if not args.skip_dataloader:
        paths["dataloader (Adam)"] = lambda s: dataloader_epoch(bundle.train_x, y, s,
                                                                args.limit_batches)
    times: dict[str, list[float]] = {"harness (AGD)": [], "  eval pass": []}
    times.update({k: [] for k in paths})
    harness_epoch(bundle, 0, 5)  # warm-up: imports, allocator
    for r in range(args.repeats):
        tr, total = harness_epoch(bundle, r, args.limit_batches)
        times["harness (AGD)"].append(tr)
        times["  eval pass"].append(total - tr)
        for name, fn in paths.items():
            times[name].append(fn(r))
    base = statistics.median(times["plain (Adam)"])
    print(f"machine: {_machine()}")
    print(f"FCN 8x256, Fashion-MNIST, batch 128, {args.repeats} interleaved repeats (median)")
    width = max(20, *(len(k) + 2 for k in times))
    print(f"{'path':<{width}}{'epoch s':>10}{'min s':>10}{'vs plain Adam':>15}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<{width}}{med:>10.3f}{min(ts):>10.3f}{med / base:>14.2f}x")
    print(f"not in the harness time: one checkpoint save (per epoch in a real run) "
          f"{checkpoint_seconds(bundle, args.repeats):.3f} s")


if __name__ == "__main__":
    main()
