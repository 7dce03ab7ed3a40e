"""Step time of hypergradient towers against the plain PyTorch optimisers (issue 4, SPEC §4).

One training step = forward + loss + backward + update, on a Fashion-MNIST batch of 128, for

* ``torch.optim.SGD(lr=0.01)``   vs the tower ``sgd(0.01) / sgd(1e-5)``
* ``torch.optim.Adam(lr=1e-3)``  vs the tower ``adam(1e-3) / sgd(1e-5)``

on MLPs 784-128-10 (the robustness experiment's) and 784-1024-1024-10. Configurations are
timed in interleaved rounds (the machine is shared and noisy) and the median per step is
reported with the ratio tower / plain (target: <= 1.5x; the paper's library: 1.2x and 2.9x).

    .venv/bin/python benchmarks/hyper.py [--rounds 7] [--steps 50] [--threads 1]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper
from hyperfree.data import load_dataset


def mlp(widths: list[int], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def plain_step(model: nn.Module, opt: torch.optim.Optimizer) -> Callable[[torch.Tensor,
                                                                        torch.Tensor], None]:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def tower_step(net: hyper.HyperModule) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        net.step(F.cross_entropy(net(x), y))
    return step


def configs(widths: list[int]) -> dict[str, Callable[[torch.Tensor, torch.Tensor], None]]:
    m1, m2, m3, m4 = (mlp(widths) for _ in range(4))
    return {
        "torch SGD": plain_step(m1, torch.optim.SGD(m1.parameters(), lr=0.01)),
        "sgd/sgd": tower_step(hyper.HyperModule(m2, hyper.parse("sgd(0.01)/sgd(1e-5)"))),
        "torch Adam": plain_step(m3, torch.optim.Adam(m3.parameters(), lr=1e-3)),
        "adam/sgd": tower_step(hyper.HyperModule(m4, hyper.parse("adam(1e-3)/sgd(1e-5)"))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--steps", type=int, default=50, help="steps per configuration per round")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    x_all = (data.train_x[:128 * 8].float() / 255 - 0.286) / 0.353
    batches = [(x_all[i:i + 128], data.train_y[i:i + 128]) for i in range(0, 128 * 8, 128)]
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), batch 128, median of {args.rounds} rounds x {args.steps}")
    print("| MLP | optimiser | ms/step | tower / plain |\n|---|---|---|---|")
    for widths in ([784, 128, 10], [784, 1024, 1024, 10]):
        steps = configs(widths)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, step in steps.items():
                t0 = time.perf_counter()
                for i in range(args.steps):
                    step(*batches[i % len(batches)])
                if r:
                    times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        arch = "-".join(map(str, widths))
        for name, base in (("torch SGD", None), ("sgd/sgd", "torch SGD"), ("torch Adam", None),
                           ("adam/sgd", "torch Adam")):
            ratio = f"{med[name] / med[base]:.2f}x" if base else ""
            print(f"| {arch} | {name} | {med[name]:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
