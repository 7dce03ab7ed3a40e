"""The paper's robustness claim, measured: do taller towers care less about the initial step size?

Chandra et al. (NeurIPS 2022) report that hypergradient towers recover from initial step sizes
that are far too small or too large, and that taller towers are less sensitive (SPEC §2). Here:
Fashion-MNIST, MLP 784-128-10 (biases, ReLU, cross-entropy, PyTorch default init), batch 128,
inputs normalised with mean 0.2860 / std 0.3530, the same seed and batch order for every run;
initial step size α ∈ {1e-4, 1e-3, 1e-2, 1e-1, 1} for

    sgd(α)   sgd(α)/sgd(κ)   sgd(α)/sgd(κ)/sgd(ν)   adam(α)   adam(α)/sgd(κ_adam)

Writes a markdown table (final train loss = mean over the last epoch, test accuracy after
training) and a figure (test accuracy and final step size against the initial one):

    .venv/bin/python benchmarks/towers_claim.py --epochs 2 \\
        --table docs/towers_claim.md --figure docs/figures/towers_claim.png
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper
from hyperfree.data import load_dataset

LRS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def stacks(kappa: float, nu: float, kappa_adam: float) -> dict[str, str]:
    """Name -> stack template (``{lr}`` is the initial step size)."""
    return {"SGD": "sgd({lr})", "SGD/SGD": f"sgd({{lr}})/sgd({kappa})",
            "SGD/SGD/SGD": f"sgd({{lr}})/sgd({kappa})/sgd({nu})",
            "Adam": "adam({lr})", "Adam/SGD": f"adam({{lr}})/sgd({kappa_adam})"}


def run(text: str, data: dict[str, torch.Tensor], epochs: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    net = hyper.HyperModule(model, hyper.parse(text))
    gen = torch.Generator().manual_seed(seed)
    n = data["train_x"].shape[0]
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        epoch_losses = []
        for i in range(0, n, 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(net(data["train_x"][idx]), data["train_y"][idx])
            net.step(loss)
            epoch_losses.append(loss.detach())
        losses = [float(v) for v in torch.stack(epoch_losses)]
    net.eval()
    with torch.no_grad():
        acc = float((net(data["test_x"]).argmax(1) == data["test_y"]).float().mean())
    final = [v for v in losses if math.isfinite(v)]
    return {"train_loss": sum(final) / len(final) if final else math.nan, "test_acc": acc,
            "final_lr": net.hyperparameters()[0]["lr"], "nonfinite": len(losses) - len(final)}


def figure(results: dict[str, dict[float, dict[str, float]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, by_lr in results.items():
        style = "--" if name.startswith("Adam") else "-"
        axes[0].plot(LRS, [100 * by_lr[lr]["test_acc"] for lr in LRS], style, marker="o",
                     label=name)
        axes[1].plot(LRS, [max(by_lr[lr]["final_lr"], 1e-8) for lr in LRS], style, marker="o",
                     label=name)
    axes[0].set(xscale="log", xlabel="initial step size α", ylabel="test accuracy (%)",
                title="Fashion-MNIST, MLP 784-128-10")
    axes[1].set(xscale="log", yscale="log", xlabel="initial step size α",
                ylabel="step size at the end", title="where the tower took α")
    axes[1].plot(LRS, LRS, ":", color="grey", label="unchanged")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def table(results: dict[str, dict[float, dict[str, float]]]) -> str:
    head = "| stack | " + " | ".join(f"α₀={lr:g}" for lr in LRS) + " |"
    lines = [head, "|---" * (len(LRS) + 1) + "|"]
    for name, by_lr in results.items():
        cells = []
        for lr in LRS:
            r = by_lr[lr]
            skip = f" ({r['nonfinite']} skipped)" if r["nonfinite"] else ""
            cells.append(f"{r['train_loss']:.3f} / {100 * r['test_acc']:.1f}% / "
                         f"α={r['final_lr']:.3g}{skip}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run")
    ap.add_argument("--seed", type=int, default=0, help="init and batch-order seed")
    ap.add_argument("--kappa", type=float, default=1e-3, help="step size of SGD on α")
    ap.add_argument("--nu", type=float, default=1e-4, help="step size of SGD on κ (3 levels)")
    ap.add_argument("--kappa-adam", type=float, default=1e-5, help="step size of SGD on Adam's "
                    "α, β1, β2")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--only", default=None, help="comma-separated stack names to run")
    ap.add_argument("--table", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--figure", type=Path, default=None, help="write the PNG figure here")
    ap.add_argument("--json", type=Path, default=None, help="write raw results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_dataset("fashion-mnist")

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - 0.2860) / 0.3530

    data = {"train_x": norm(bundle.train_x), "train_y": bundle.train_y,
            "test_x": norm(bundle.test_x), "test_y": bundle.test_y}
    templates = stacks(args.kappa, args.nu, args.kappa_adam)
    if args.only:
        templates = {k: v for k, v in templates.items() if k in args.only.split(",")}
    results: dict[str, dict[float, dict[str, float]]] = {}
    t0 = time.perf_counter()
    for name, template in templates.items():
        results[name] = {}
        for lr in LRS:
            results[name][lr] = run(template.format(lr=lr), data, args.epochs, args.seed)
            print(f"{name:12s} α₀={lr:<7g} {json.dumps(results[name][lr])}", flush=True)
    minutes = (time.perf_counter() - t0) / 60
    header = (f"<!-- {args.epochs} epoch(s), batch 128, seed {args.seed}, κ={args.kappa}, "
              f"ν={args.nu}, κ_adam={args.kappa_adam}; torch {torch.__version__}, "
              f"{platform.machine()}, {args.threads} thread(s); {minutes:.1f} min -->")
    text = header + "\n" + table(results)
    print(text)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text + "\n")
    if args.figure:
        figure(results, args.figure)
    if args.json:
        args.json.write_text(json.dumps({k: {str(lr): v for lr, v in r.items()}
                                         for k, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
