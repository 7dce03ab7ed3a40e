"""Time to result on the race's workloads: AGD's training step against AdamW's and Muon's,
side by side in one run.

    .venv/bin/python benchmarks/time_to_result.py [--workloads fcn16,fcn32,conv,gpt,lstm]
        [--rounds 15] [--threads 1] [--presets spectral-momentum,...] [--schedules ns4]
        [--text PATH]

Per workload (``benchmarks/_race_workloads.py``: the race's models, data and batch sizes), each
contestant trains its own copy of the same initial model on the same real batches (prefetched:
data loading is not timed):

* ``AGD default``: ``hyperfree.AGD(model)`` (preset ``auto``: what ``hyperfree train`` and the
  race's ``agd``/``agd-auto`` run), and ``AGD <name>`` = ``hyperfree.AGD(model, preset=name)``
  for each ``--presets``;
* ``AdamW``: ``torch.optim.AdamW(lr=1e-3, weight_decay=0.01, foreach=True)`` (the race's);
* ``Muon``: the race's ``muon`` entry (``hyperfree.train.steppers.MuonStepper``):
  ``torch.optim.Muon`` on the 2-D single-block Linear weights, AdamW (foreach) on the rest.

A round runs one training step of every contestant, in a shuffled order; a step is timed as
``zero_grad + forward + loss + backward`` then ``optimizer.step()``. The table gives medians
over the rounds of the whole step and of the optimiser step alone, and their ratios to AdamW's
and Muon's — ratios of the same run, so the machine's load (shared) moves all of them alike.
``grid cost`` is what the race's learning-rate grids cost in units of one default AGD run of
the same length: ``len(GRID) × step(AdamW) / step(AGD default)`` (5 AdamW runs) and
``len(SGD_GRID) × step(AdamW) / step(AGD default)`` (3 SGD runs, costed at AdamW's step).

Then the orthogonalisation alone: every stack the default AGD hands to ``orthogonalize`` on that
workload (recorded from a real step), timed as the optimiser runs it against
``torch.optim.Muon``'s Newton–Schulz (bfloat16, 5 steps) on the same matrices one at a time, as
Muon runs it; same interleaved rounds.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _race_workloads as W  # noqa: E402
from orthogonalize import time_methods  # noqa: E402  (the interleaved timing loop)

import hyperfree  # noqa: E402
from hyperfree.experiments.race import SGD_GRID  # noqa: E402
from hyperfree.experiments.suite import GRID  # noqa: E402
from hyperfree.optim.newton_schulz import NS_COEFFICIENTS, orthogonalize  # noqa: E402
from hyperfree.train.steppers import MuonStepper  # noqa: E402


class Contestant:
    """A model copy, its optimisers and a batch stream; ``step()`` -> (step s, optimiser s).
    ``schedule``: the optimiser steps under ``_race_workloads.using_schedule(schedule)``."""

    def __init__(self, w: W.Workload, build: Callable[[nn.Module], list[torch.optim.Optimizer]],
                 schedule: str | None = None):
        self.model = copy.deepcopy(w.model)
        self.opts = build(self.model)
        self.loss_fn = w.loss_fn
        self.batches: Iterator[tuple[Tensor, Tensor]] = w.stream()
        self.schedule = contextlib.nullcontext if schedule is None else \
            (lambda: W.using_schedule(schedule))

    def step(self) -> tuple[float, float]:
        x, y = next(self.batches)
        t0 = time.perf_counter()
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        self.loss_fn(self.model(x), y).backward()
        t1 = time.perf_counter()
        with self.schedule():
            for opt in self.opts:
                opt.step()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1


Build = Callable[[nn.Module], list]


def contestants(presets: list[str], schedules: list[str]
                ) -> dict[str, tuple[Build, str | None]]:
    """name -> (optimisers of a model, Newton–Schulz schedule prototype or None)."""
    def default(m: nn.Module) -> list:
        return [hyperfree.AGD(m)]

    out: dict[str, tuple[Build, str | None]] = {"AGD default": (default, None)}
    out.update({f"AGD default [{s}]": (default, s) for s in schedules})
    for name in presets:
        out[f"AGD {name}"] = (lambda m, p=name: [hyperfree.AGD(m, preset=p)], None)
    out["AdamW"] = (lambda m: [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01,
                                                 foreach=True)], None)
    out["Muon"] = (lambda m: list(MuonStepper(m, lr=1e-3, momentum=0.95,
                                              weight_decay=0.1).optimizers.values()), None)
    return out


def time_steps(w: W.Workload, presets: list[str], schedules: list[str], rounds: int,
               warmup: int = 3) -> dict[str, tuple[float, float]]:
    """{contestant: (median step s, median optimiser-step s)} over interleaved rounds."""
    cs = {n: Contestant(w, b, s) for n, (b, s) in contestants(presets, schedules).items()}
    for c in cs.values():
        for _ in range(warmup):  # state, plans, and AGD's first (direction-less) fresh step
            c.step()
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in cs}
    order = list(cs.items())
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name, c in order:
            times[name].append(c.step())
    return {n: (statistics.median(t for t, _ in ts), statistics.median(o for _, o in ts))
            for n, ts in times.items()}


def muon_ns(G: Tensor) -> Tensor:
    """``torch.optim.Muon``'s Newton–Schulz on each matrix of the stack, one at a time."""
    from torch.optim._muon import EPS, _zeropower_via_newtonschulz

    return torch.stack([_zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, EPS) for g in G])


def time_orthogonalisation(w: W.Workload, rounds: int) -> tuple[str, float, float]:
    """(shapes, median s of AGD's orthogonalize over the stacks, median s of Muon's NS)."""
    stacks = W.capture_polar_inputs(w, 3, {3}).get(3, [])
    if not stacks:
        return "none", 0.0, 0.0
    times = time_methods(stacks, {"agd": lambda G: orthogonalize(G, steps=5), "muon": muon_ns},
                         rounds)
    shapes = ", ".join(f"{G.shape[0]}x{G.shape[1]}x{G.shape[2]}" for G in stacks)
    return shapes, statistics.median(times["agd"]), statistics.median(times["muon"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(W.WORKLOADS),
                    help="comma-separated: " + ",".join(W.WORKLOADS))
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--presets", default="", help="also time these AGD presets (comma-separated)")
    ap.add_argument("--schedules", default="",
                    help="also time the default AGD with these Newton-Schulz schedule prototypes "
                         f"(comma-separated: {', '.join(W.SCHEDULES)})")
    ap.add_argument("--text", type=Path, default=W.TEXT, help="tinyshakespeare.txt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    presets = [p for p in args.presets.split(",") if p]
    schedules = [s for s in args.schedules.split(",") if s]
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} "
          "(a shared machine: read the ratios, measured side by side, not the milliseconds)")
    summary = []
    for name in args.workloads.split(","):
        w = W.build(name, text=args.text)
        t = time_steps(w, presets, schedules, args.rounds)
        step_a, opt_a = t["AdamW"]
        step_m, opt_m = t["Muon"]
        print(f"\n## {name}: {sum(p.numel() for p in w.model.parameters()) / 1e6:.2f}M "
              f"parameters, batch {len(w.batches[0][1])}, {args.rounds} rounds")
        print("| optimiser | step ms | x AdamW | x Muon | optimiser step ms | x AdamW | x Muon "
              "| share of step |")
        print("|---|---|---|---|---|---|---|---|")
        for n, (s, o) in t.items():
            print(f"| {n} | {1e3 * s:.1f} | {s / step_a:.2f} | {s / step_m:.2f} | {1e3 * o:.1f} "
                  f"| {o / opt_a:.2f} | {o / opt_m:.2f} | {o / s:.0%} |")
        step_d = t["AGD default"][0]
        print(f"grid cost in default runs: AdamW x{len(GRID)} = {len(GRID) * step_a / step_d:.2f}"
              f", SGD x{len(SGD_GRID)} ~ {len(SGD_GRID) * step_a / step_d:.2f}")
        shapes, t_agd, t_muon = time_orthogonalisation(w, args.rounds)
        ratio = t_agd / t_muon if t_muon else float("nan")
        print(f"orthogonalisation alone ({shapes}): AGD {1e3 * t_agd:.1f} ms, Muon's NS "
              f"{1e3 * t_muon:.1f} ms, ratio {ratio:.2f}")
        for variant in [n for n in t if n.startswith("AGD default")]:
            step_v, opt_v = t[variant]
            summary.append((name, variant, step_v / step_a, step_v / step_m, opt_v / opt_a,
                            ratio if variant == "AGD default" else None))
    print("\n## Summary: AGD default against AdamW and Muon (ratios of medians, same run)")
    print("| workload | AGD | step x AdamW | step x Muon | optimiser step x AdamW "
          "| orthogonalisation x Muon's |")
    print("|---|---|---|---|---|---|")
    for name, variant, a, m, o, r in summary:
        print(f"| {name} | {variant} | {a:.2f} | {m:.2f} | {o:.1f} | "
              f"{'-' if r is None else f'{r:.2f}'} |")


if __name__ == "__main__":
    main()
