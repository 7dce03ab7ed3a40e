"""The default run's epoch time beside other work: torch's thread count against the CLI's.

Before issue 20, ``hyperfree train`` left torch at one thread per core; on a 2-core machine
with one other CPU-bound process, those threads spin in each other's barriers. Now the CLI
gives torch the cores that are idle when it starts (``hyperfree.cli._runtime.pick_threads``).
This script runs the default job (FCN 8×256, AGD, Fashion-MNIST, batch 128) for one epoch of
``--limit-batches`` steps under both settings, interleaved round by round so that both see the
same machine, with and without one extra CPU-bound process (``while True: pass``) beside it:

    before: hyperfree train --threads <cores>        (torch's default)
    after:  hyperfree train                          (the CLI picks)

and prints, per setting, the median training time per step, the epoch time it implies (469
steps) and the ratio before/after. The time is the record's ``train_seconds`` (the training
steps only: no start-up, evaluation or checkpoint). The machine's load average is printed
too: on a shared machine "idle" means "without the extra process", not an idle machine.

Run: .venv/bin/python benchmarks/threads.py [--rounds 3] [--steps 150]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS_PER_EPOCH = 469


def _one(tmp: Path, name: str, threads: int | None, steps: int) -> tuple[float, int]:
    out = tmp / name
    argv = [sys.executable, "-m", "hyperfree", "train", "--epochs", "1", "--limit-batches",
            str(steps), "--no-progress", "--no-plots", "--out", str(out)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    subprocess.run(argv, check=True, capture_output=True, timeout=3600)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    used = json.loads((out / "config.json").read_text())["environment"]["num_threads"]
    return record["train_seconds"] / steps, int(used)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="hf-threads-") as folder:
        tmp = Path(folder)
        for competitor in (True, False):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) \
                if competitor else None
            where = "1 extra CPU-bound process" if competitor else "no extra process"
            try:
                for r in range(args.rounds):
                    for label, threads in (("before", cores), ("after", None)):
                        key = (where, label)
                        name = f"{'busy' if competitor else 'quiet'}-{r}-{label}"
                        res = _one(tmp, name, threads, args.steps)
                        results.setdefault(key, []).append(res)
                        print(f"{where:26s} {label:6s} round {r + 1}: {res[0] * 1e3:.1f} ms/step"
                              f" ({res[1]} threads), load {os.getloadavg()[0]:.1f}", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    print(f"\n{cores} cores; load average now {os.getloadavg()[0]:.1f} (a shared machine)")
    print("| beside | setting | threads | ms/step (median) | epoch of 469 steps | ratio |")
    print("|---|---|---|---|---|---|")
    for where in ("1 extra CPU-bound process", "no extra process"):
        before = statistics.median(t for t, _ in results[(where, "before")])
        for label in ("before", "after"):
            runs = results[(where, label)]
            med = statistics.median(t for t, _ in runs)
            threads = sorted({n for _, n in runs})
            print(f"| {where} | {label} | {', '.join(map(str, threads))} | {med * 1e3:.1f} | "
                  f"{med * STEPS_PER_EPOCH:.1f} s | {before / med:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
