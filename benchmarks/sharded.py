"""AGD under FSDP2 on CPU (gloo): step time of the two ways to orthogonalise sharded matrices.

A GPT-style stack (embedding, then ``--layers`` blocks of LayerNorm, packed-QKV attention and a
4x MLP, all with biases) is ``fully_shard``-ed over ``--world`` processes (fork, gloo,
127.0.0.1). Gradients are filled with random shards once; every configuration then takes
``--steps`` steps and rank 0 prints the median step time and the collectives per step:

* ``spectral``, ``sharded_polar="owner"`` — every matrix is sent to one owner rank (one
  ``all_to_all``), each rank runs Newton–Schulz on its ~1/W share, and a second ``all_to_all``
  returns every rank its rows of the directions (Muon's distributed scheme);
* ``spectral``, ``sharded_polar="gather"`` — one ``all_gather`` of every matrix, every rank
  orthogonalises all of them;
* ``paper`` — no Newton–Schulz: one all-reduce of the partial sums per step;
* the same model unsharded in one process, for scale.

    python benchmarks/sharded.py [--world 2] [--layers 4] [--width 256] [--steps 10]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import hyperfree


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


def model(layers: int, d: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(4096, d), *[Block(d) for _ in range(layers)])


def _time(opt: hyperfree.AGD, steps: int) -> float:
    opt.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                           world_size=world)
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    m = model(args.layers, args.width)
    for block in m[1:]:
        fully_shard(block)
    fully_shard(m)
    gen = torch.Generator().manual_seed(rank)
    for p in m.parameters():
        local = torch.randn(p.to_local().shape, generator=gen) * 1e-3
        p.grad = DTensor.from_local(local, p.device_mesh, p.placements, shape=p.shape,
                                    stride=p.stride())
    rows = []
    for preset, scheme in [("paper", "owner"), ("spectral", "owner"), ("spectral", "gather")]:
        opt = hyperfree.AGD(m, preset=preset, sharded_polar=scheme)
        t = _time(opt, args.steps)
        calls = opt._sharded.collectives / (args.steps + 1)
        rows.append((f"{preset}, {scheme}" if preset != "paper" else preset, t, calls))
    if rank == 0:
        torch.save(rows, out)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2, help="processes (gloo, CPU)")
    ap.add_argument("--layers", type=int, default=4, help="transformer blocks")
    ap.add_argument("--width", type=int, default=256, help="model width d")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    single = model(args.layers, args.width)
    for p in single.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    base = {preset: _time(hyperfree.AGD(single, preset=preset), args.steps)
            for preset in ("paper", "spectral")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.pt")
        mp.start_processes(worker, args=(args.world, port, args, out), nprocs=args.world,
                           join=True, start_method="fork")
        rows = torch.load(out, weights_only=True)
    n = sum(p.numel() for p in single.parameters())
    print(f"# {args.layers} blocks of width {args.width} ({n / 1e6:.2f}M), {args.world} gloo "
          f"processes x 1 thread, torch {torch.__version__}, median of {args.steps} steps")
    print("| configuration | step ms | collectives / step |")
    print("|---|---|---|")
    for preset, t in base.items():
        print(f"| {preset}, one process, unsharded | {t * 1e3:.1f} | 0 |")
    for name, t, calls in rows:
        print(f"| {name}, FSDP2 x{args.world} | {t * 1e3:.1f} | {calls:.0f} |")


if __name__ == "__main__":
    main()
