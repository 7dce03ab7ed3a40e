"""How much of a finished run's test loss is its logits' scale: the test loss at the
loss-optimal temperature (``docs/agd-stability.md`` §27).

For each run directory (``hyperfree train --out DIR`` or a race run), the run is rebuilt from
its ``checkpoint.pt`` and evaluated exactly as the loop evaluates it
(:func:`hyperfree.train.evaluation.evaluate`: at the optimiser's evaluation point, AGD's
averaged weights or Schedule-Free's ``x``, with BatchNorm statistics recomputed there), while
the same logits are also scored divided by each temperature ``T`` of a grid:

    loss(T) = mean over the test targets of logsumexp(f / T) − f_y / T

Printed per run: ``loss(1)`` (the run's own final test loss: the script checks the two agree),
the grid's best ``T*`` and ``loss(T*)``, what the scale costs (``loss(1) − loss(T*)``) and the
test accuracy (which no ``T`` changes). ``T* > 1`` is a model more confident than its test
data bear out. ``T*`` is chosen on the test split itself — an oracle, a diagnosis of where
a loss comes from, not a result to report as a run's.

    python benchmarks/calibration.py RUN_DIR [RUN_DIR ...] [--data-dir [DATASET=]PATH]
        [--threads 1]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from hyperfree.cli.experiment import parse_data_dirs
from hyperfree.train._run import _Run
from hyperfree.train.build import default_loss, load_data
from hyperfree.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from hyperfree.train.config import TrainConfig
from hyperfree.train.transfer import select_classes
from hyperfree.train.distributed import SINGLE
from hyperfree.train.evaluation import evaluate
from hyperfree.train.losses import cross_entropy
from hyperfree.train.tally import WarningTally

#: 0.5 … 2, 3.5% apart (61 points, 1 among them)
TEMPERATURES = tuple(math.exp(math.log(0.5) + i * math.log(4.0) / 60) for i in range(61))


class Tempered:
    """The loop's cross-entropy, also summing ``loss(T) · targets`` for every ``T``."""

    def __init__(self, temperatures: Sequence[float]) -> None:
        self.temperatures = tuple(temperatures)
        self.sums = [0.0] * len(self.temperatures)
        self.count = 0

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Score one batch's logits at every temperature."""
        n, logits = target.numel(), logits.float()
        for i, t in enumerate(self.temperatures):
            self.sums[i] += float(cross_entropy(logits / t, target)) * n
        self.count += n

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """As the loop's loss function: the batch's loss at T = 1, the others recorded."""
        self.add(logits, target)
        return cross_entropy(logits, target)

    def losses(self) -> dict[float, float]:
        return {t: s / self.count for t, s in zip(self.temperatures, self.sums)}

    def best(self) -> tuple[float, float]:
        """``(T*, loss(T*))``, the grid's best."""
        losses = self.losses()
        t = min(losses, key=losses.__getitem__)
        return t, losses[t]


def read(run_dir: Path, data_dirs: dict[str, str],
         temperatures: Sequence[float] = TEMPERATURES) -> dict[str, Any]:
    """``{run, optimizer, loss, best_t, best_loss, acc, recorded}`` of one finished run."""
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {CHECKPOINT_NAME}: pass the directory of a run "
                         "that has saved one (hyperfree train --out DIR)")
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.from_dict(ckpt["config"]).replace(out_dir=None, device="cpu",
                                                        num_workers=0, progress=False)
    given = data_dirs.get(cfg.dataset, data_dirs.get("") if cfg.data_dir else None)
    if given is not None:  # a bare PATH: only where the run read a path of its own
        cfg = cfg.replace(data_dir=given)
    device = torch.device("cpu")
    bundle = load_data(cfg, device)
    if cfg.classes is not None:
        bundle = select_classes(bundle, cfg.classes)
    if (loss := cfg.loss or default_loss(bundle.info)) != "xent":
        raise ValueError(f"{run_dir} was trained with loss {loss!r}: a temperature scales the "
                         "logits of a cross-entropy run only (--loss xent)")
    with WarningTally() as tally:
        run = _Run(cfg, SINGLE, device, bundle, [], None, tally)
        run.restore(ckpt)
        n = len(run.test_loader) if run.text else run._limit(run.test_loader)
        tempered = Tempered(temperatures)
        out = evaluate(run.stepper, run.test_loader, n, tempered, device, SINGLE,
                       calibration=run.calibration_batches)
    best, best_loss = tempered.best()
    recorded = next((r["test_loss"] for r in reversed(ckpt["metrics"]) if "test_loss" in r),
                    None)
    return {"run": str(run_dir), "optimizer": cfg.optimizer, "loss": out["test_loss"],
            "best_t": best, "best_loss": best_loss, "acc": out["test_acc"],
            "recorded": recorded}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--data-dir", action="append", default=[], metavar="[DATASET=]PATH",
                        help="where a dataset lives, when not where the run read it")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        data_dirs = parse_data_dirs(args.data_dir)
        rows = [read(r, data_dirs) for r in args.runs]
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(f"{'run':40s} {'optimizer':18s} {'loss(1)':>9s} {'T*':>6s} {'loss(T*)':>9s} "
          f"{'scale':>7s} {'acc':>7s}")
    for r in rows:
        print(f"{Path(r['run']).name[:40]:40s} {r['optimizer'][:18]:18s} {r['loss']:9.4f} "
              f"{r['best_t']:6.3f} {r['best_loss']:9.4f} {r['loss'] - r['best_loss']:7.4f} "
              f"{r['acc']:7.4f}", flush=True)
        if r["recorded"] is not None and abs(r["recorded"] - r["loss"]) > 1e-4 * max(
                1.0, abs(r["recorded"])):
            print(f"  note: the run recorded {r['recorded']:.4f} (evaluated elsewhere: another "
                  "thread count or data)", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
