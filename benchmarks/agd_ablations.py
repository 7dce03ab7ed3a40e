"""Ablations of AGD's update: direction, G's norm, momentum, the stability rule, conv scale.

``docs/agd-stability.md`` reports what this script prints. Each variant changes one piece of
the update of AGD (Bernstein et al. 2023) on bias-free networks (the registry's ``fcn`` and
``resnet_small``, whose parameters are all matrices or conv kernels), so the variants can be
written out here in a few lines — including the ones the library does not ship:

.. code-block:: text

    u      = g, or m/(1−β^t) with m ← β m + (1−β) g                 (momentum β)
    D      = u/‖u‖_F per cell ("frob")  or  NS5(u) per cell ("polar")   (direction)
    term   = σ·‖u‖_F ("frob")  or  σ·⟨u, D⟩ ≈ σ·‖u‖_* ("dual")         (G's norm)
    η      = log((1 + sqrt(1 + 4G)/2)),  G = Σ term / L
    W      ← W − (η/L)·σ·D                                           ("none")
             W ← (1 − η/L)·W − (η/L)·σ·D                             ("cg": conditional gradient)
             then every cell rescaled to its init norm                ("sphere")
    σ_conv = sqrt(c_out/c_in)/sqrt(K) ("sqrt", the paper)  or  /K ("k", modula)

The shipped presets are checked against ``hyperfree.AGD`` before anything runs (the first three
steps of ``paper`` and ``spectral-momentum`` agree to float32 precision), so this transcription
and the library compute the same thing where they overlap. The GPT rows (momentum β and the
retraction on a model with every parameter kind) use ``hyperfree.AGD`` presets directly.

    .venv/bin/python benchmarks/agd_ablations.py --threads 1 --table docs/agd-ablations.md

Runs the race's quick lengths (FCN 2 epochs, resnet_small 2 epochs, GPT 500 steps), seed 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hyperfree.data import load_dataset
from hyperfree.models import create_model
from hyperfree.optim import AGD, Preset
from hyperfree.optim.newton_schulz import orthogonalize


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    direction: str = "frob"   # frob | polar
    g_norm: str = "frob"      # frob | dual
    beta: float = 0.0
    guard: str = "none"       # none | cg | sphere
    conv: str = "sqrt"        # sqrt | k


def _cells(p: torch.Tensor) -> torch.Tensor:
    """(n, d_out, d_in) view/copy of a Linear weight or conv kernel's slices."""
    return p.unsqueeze(0) if p.dim() == 2 else p.flatten(2).permute(2, 0, 1)


def _uncells(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c[0] if like.dim() == 2 else c.permute(1, 2, 0).reshape(like.shape)


def _sigma(p: torch.Tensor, conv: str) -> float:
    s = math.sqrt(p.shape[0] / p.shape[1])
    if p.dim() == 2:
        return s
    K = p[0, 0].numel()
    return s / (math.sqrt(K) if conv == "sqrt" else K)


class Ablated(torch.optim.Optimizer):
    """AGD with the pieces of :class:`Variant` switched (bias-free networks only)."""

    def __init__(self, params, v: Variant):
        super().__init__(list(params), {})
        self.v, self.t = v, 0
        self.ps = self.param_groups[0]["params"]
        self.radius = {}

    @torch.no_grad()
    def init_weights(self, gen: torch.Generator) -> None:
        from hyperfree.optim.init import haar_semi_orthogonal

        for p in self.ps:
            n, o, i = _cells(p).shape
            q = haar_semi_orthogonal(n, o, i, generator=gen) * _sigma(p, self.v.conv)
            p.copy_(_uncells(q.to(p.dtype), p))
            self.radius[p] = _cells(p).norm(dim=(1, 2), keepdim=True)

    @torch.no_grad()
    def step(self) -> float:
        v, L = self.v, len(self.ps)
        self.t += 1
        dirs, total = [], 0.0
        for p in self.ps:
            u = p.grad
            if v.beta:
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.lerp_(u, 1 - v.beta)
                u = m / (1 - v.beta ** self.t)
            cu = _cells(u)
            if v.direction == "frob":
                n = cu.norm(dim=(1, 2), keepdim=True)
                D = torch.where(n > 0, cu / n, torch.zeros_like(cu))
            else:
                D = orthogonalize(cu)
            term = cu.norm(dim=(1, 2)).sum() if v.g_norm == "frob" else (cu * D).sum()
            total += _sigma(p, v.conv) * float(term)
            dirs.append(D)
        eta = math.log((1 + math.sqrt(1 + 4 * total / L)) / 2)
        for p, D in zip(self.ps, dirs):
            step = eta / L * _sigma(p, v.conv)
            if v.guard == "cg":
                p.mul_(1 - eta / L)
            p.sub_(_uncells(D, p), alpha=step)
            if v.guard == "sphere":
                c = _cells(p)
                p.copy_(_uncells(c * (self.radius[p] / c.norm(dim=(1, 2), keepdim=True)), p))
        return eta


VARIANTS = [
    Variant("paper (frob dir, frob G)"),
    Variant("paper + momentum", beta=0.95),
    Variant("polar dir, frob G", "polar", "frob"),
    Variant("polar dir, frob G, momentum", "polar", "frob", 0.95),
    Variant("spectral (polar, dual G)", "polar", "dual"),
    Variant("spectral + conditional gradient", "polar", "dual", guard="cg"),
    Variant("spectral + sphere", "polar", "dual", guard="sphere"),
    Variant("spectral + momentum", "polar", "dual", 0.95),
    Variant("spectral + momentum + sphere", "polar", "dual", 0.95, "sphere"),
]
CONV_ONLY = [Variant("spectral + momentum, conv σ /K", "polar", "dual", 0.95, conv="k"),
             Variant("paper, conv σ /K", conv="k")]


def _image_run(arch: str, kwargs: dict, v: Variant, epochs: int, seed: int, bundle) -> dict:
    torch.manual_seed(seed)
    model = create_model(arch, in_channels=1, num_classes=10, image_size=28, **kwargs)
    opt = Ablated(model.parameters(), v)
    opt.init_weights(torch.Generator().manual_seed(seed))
    loader, etas, t0 = bundle.train_loader(128, seed=seed), [], time.perf_counter()
    for ep in range(epochs):
        loader.set_epoch(ep)
        model.train()
        for x, y in loader:
            target = F.one_hot(y, 10).float() * math.sqrt(10)
            loss = ((model(x) - target) ** 2).mean()
            if not math.isfinite(loss.item()) or loss.item() > 1e6:
                return {"test": float("nan"), "eta": etas[-1] if etas else math.nan,
                        "note": f"diverged in epoch {ep + 1}"}
            opt.zero_grad()
            loss.backward()
            etas.append(opt.step())
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in bundle.test_loader(1000))
    last = etas[-len(loader):]
    return {"test": hits / len(bundle.test_y), "eta": sorted(last)[len(last) // 2],
            "eta_max": max(last), "seconds": time.perf_counter() - t0}


def check_against_library(bundle) -> None:
    """The transcription equals hyperfree.AGD on the shipped presets (3 steps, FCN)."""
    for preset, v in (("paper", VARIANTS[0]), ("spectral-momentum", VARIANTS[7])):
        torch.manual_seed(0)
        a = create_model("fcn", in_channels=1, num_classes=10, image_size=28, depth=4,
                         width=64).double()  # float64: Newton-Schulz too, so exact agreement
        b = create_model("fcn", in_channels=1, num_classes=10, image_size=28, depth=4,
                         width=64).double()
        b.load_state_dict(a.state_dict())
        lib, mine = AGD(a, preset=preset), Ablated(b.parameters(), v)
        lib.init_weights(torch.Generator().manual_seed(1))
        mine.init_weights(torch.Generator().manual_seed(1))
        for x, y in list(bundle.train_loader(128, seed=0))[:3]:
            for model, opt in ((a, lib), (b, mine)):
                opt.zero_grad()
                target = F.one_hot(y, 10).double() * math.sqrt(10)
                ((model(x.double()) - target) ** 2).mean().backward()
                opt.step()
        for p, q in zip(a.parameters(), b.parameters()):
            rel = float((p - q).detach().norm() / q.detach().norm())
            if rel > 1e-9:
                raise AssertionError(f"{preset}: this transcription and hyperfree.AGD differ "
                                     f"(relative {rel:.1e})")


def _gpt_run(preset: Preset, steps: int, seed: int, text: str) -> dict:
    bundle = load_dataset("tinyshakespeare", data_dir=text, seq_len=64)
    torch.manual_seed(seed)
    model = create_model("gpt", in_channels=0, num_classes=bundle.info.num_classes,
                         image_size=0, depth=4, width=128, heads=4, seq_len=64)
    opt = AGD(model, preset=preset)
    opt.init_weights(torch.Generator().manual_seed(seed))
    loader, epoch, etas, t0 = bundle.train_loader(12, seed=seed), 0, [], time.perf_counter()
    it = iter(loader)
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            it = iter(loader)
            x, y = next(it)
        opt.zero_grad()
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
        etas.append(float(opt.eta))
    model.eval()
    total = n = 0
    with torch.no_grad():
        for x, y in bundle.test_loader(500):
            total += float(F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum"))
            n += y.numel()
    last = etas[-100:]
    return {"test_loss": total / n, "eta": sorted(last)[len(last) // 2],
            "seconds": time.perf_counter() - t0}


GPT_PRESETS = [Preset("no momentum", "spectral"),
               Preset("beta 0.9", "spectral", momentum=0.9),
               Preset("beta 0.95 (spectral-momentum)", "spectral", momentum=0.95),
               Preset("beta 0.98", "spectral", momentum=0.98),
               Preset("beta 0.95 + sphere", "spectral", momentum=0.95, retract="sphere"),
               Preset("paper", "frobenius")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--gpt-steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", default="../shared/data/tinyshakespeare.txt",
                    help="tinyshakespeare.txt for the GPT rows (skipped if missing)")
    ap.add_argument("--only", choices=("fcn16", "resnet", "gpt"), action="append")
    ap.add_argument("--table", type=Path, help="write the Markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_dataset("fashion-mnist")
    check_against_library(bundle)
    rows = [f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{args.threads} thread(s); seed {args.seed}.", "",
            "| workload | variant | test | median η (last epoch) | max η | s |",
            "|---|---|---|---|---|---|"]
    jobs = []
    if not args.only or "fcn16" in args.only:
        jobs += [("fcn16 (16×512)", "fcn", {"depth": 16, "width": 512}, v) for v in VARIANTS]
    if not args.only or "resnet" in args.only:
        jobs += [("resnet_small", "resnet_small", {"depth": 1, "width": 16}, v)
                 for v in (VARIANTS[0], VARIANTS[4], VARIANTS[7], VARIANTS[8], *CONV_ONLY)]
    for work, arch, kwargs, v in jobs:
        r = _image_run(arch, kwargs, v, args.epochs, args.seed, bundle)
        test = r.get("note") or f"{100 * r['test']:.1f}%"
        rows.append(f"| {work} | {v.name} | {test} | {r['eta']:.3g} | "
                    f"{r.get('eta_max', math.nan):.3g} | {r.get('seconds', 0):.0f} |")
        print(rows[-1], flush=True)
    if (not args.only or "gpt" in args.only) and Path(args.text).is_file():
        for preset in GPT_PRESETS:
            r = _gpt_run(preset, args.gpt_steps, args.seed, args.text)
            rows.append(f"| gpt ({args.gpt_steps} steps) | {preset.name} | "
                        f"{r['test_loss']:.3f} nats | {r['eta']:.3g} | — | {r['seconds']:.0f} |")
            print(rows[-1], flush=True)
    if args.table:
        args.table.write_text("\n".join(rows) + "\n")
    print(json.dumps({"rows": len(rows) - 4}))


if __name__ == "__main__":
    main()
