"""What the benchmarks of models the race lacks (``hf_llama.py``, ``hf_vision.py``,
``torch_text.py``) share: AdamW as its users set it (linear warmup over 5% of the run, then
cosine decay to 0), the loop over variants and seeds, and the summary of one metric per variant
over seeds."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable

import torch


def adamw_warmup_cosine(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                        steps: int):
    """``(AdamW, its scheduler)``: the lr rises linearly over the first 5% of ``steps`` and
    falls to 0 along a half cosine by the last."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, int(0.05 * steps + 0.5))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) /
                                                                  max(1, steps - warm))))
    return opt, sched


def run_variants(variants: Iterable[str], seeds: Iterable[int],
                 run_one: Callable[[str, int], tuple[float, float | None]],
                 show: Callable[[float], str]) -> dict[str, list[float]]:
    """``{variant: [metric per seed]}`` of ``run_one(variant, seed) -> (metric, train loss or
    None)``, printing one line per run as it finishes (``show(metric)``, the training loss if
    any, seconds)."""
    results: dict[str, list[float]] = {}
    for variant in variants:
        for seed in seeds:
            t0 = time.perf_counter()
            metric, train = run_one(variant, seed)
            results.setdefault(variant, []).append(metric)
            fit = "" if train is None else f"train {train:.4f}; "
            print(f"{variant:14s} seed {seed}: {show(metric)}  ({fit}"
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return results


def print_summary(results: dict[str, list[float]], fmt: Callable[[float, float], str]) -> None:
    """One line per variant: ``fmt(mean, std)`` over its seeds (std 0 for one seed)."""
    print("variant          mean ± std over seeds")
    for variant, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{variant:14s}   {fmt(statistics.mean(values), std)}")
