"""Step-time benchmark: AGD against the memory-bound floor and torch.optim, side by side.

Shape sets (``--sets``): ``fcn`` (FCN depth 8 x width 1024: 8 Linear weights, 7.1M), ``resnet18``
(the conv weights of a CIFAR pre-activation ResNet-18 + its head, 11.2M), ``convnext`` (every
parameter of ConvNeXt-T, 28.6M: its depthwise 7 x 7 convs are 1 x 1 matrix cells per channel
and kernel position) and ``gpt2`` (every
parameter of GPT-2 small, 124M: ``wte`` (50257, 768) and ``wpe`` (1024, 768) as embeddings, per
layer ``c_attn`` (768, 2304) stored (in, out) as HF ``Conv1D`` -> kind ``linear_in_out`` x 3
blocks, ``attn.c_proj`` (768, 768), ``mlp.c_fc`` (768, 3072), ``mlp.c_proj`` (3072, 768), all
``linear_in_out``, their biases (``c_attn.bias`` as 3 blocks), ``ln_1``/``ln_2``/``ln_f`` gains and
biases; the head is tied to ``wte``). Gradients are filled once; every candidate steps the SAME
parameter tensors (so memory placement, which moves single runs by ±10% on a shared CPU, is the
same for all), in a shuffled order each round. The table gives the median step time, the ratio
of the median (and of the 10th percentile: less sensitive to preemption on a loaded machine) to
the floor ``torch._foreach_add_(params, grads, alpha=-0.1)``, and the memory each optimiser
keeps (weights + state, in units of the weights). "two passes" (``torch._foreach_norm`` then
the floor) is the least a step that normalises by a norm of the gradient can cost.
``torch.optim.Muon`` steps the hidden 2-D
matrices only (its documented use; embeddings, gains and biases would go to another optimiser).

``--ops`` prints the CPU proxy for launch counts: the number of top-level aten operator calls of
one ``step()`` (``torch.profiler``), for 8/16/32/64-tensor members of three model families.

    python benchmarks/step.py [--device cpu|cuda] [--rounds 30] [--threads 2]
                              [--sets fcn,resnet18,convnext,gpt2] [--gpt2-layers 12] [--ops]
                              [--presets paper,spectral,...] [--no-reference]

On CUDA it also runs every preset under ``torch.cuda.set_sync_debug_mode("error")`` from the
second step on, to show that ``step()`` never synchronises with the host.
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable

import torch

import hyperfree
from hyperfree.optim import PRESETS, Kind

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test oracle lives in tests/
from tests.optim.reference import ReferenceAGD  # noqa: E402

Shapes = list[tuple[tuple[int, ...], Kind]]


def fcn_shapes() -> Shapes:
    return [((1024, 784), Kind("linear"))] + [((1024, 1024), Kind("linear"))] * 6 + \
        [((10, 1024), Kind("linear"))]


def resnet18_shapes() -> Shapes:
    shapes: Shapes = [((64, 3, 3, 3), Kind("conv"))]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            shapes += [((cout, cin, 3, 3), Kind("conv")), ((cout, cout, 3, 3), Kind("conv"))]
            if block == 0 and (stride != 1 or cin != cout):
                shapes.append(((cout, cin, 1, 1), Kind("conv")))
            cin = cout
    return shapes + [((10, 512), Kind("linear"))]


def convnext_shapes(dims: tuple[int, ...] = (96, 192, 384, 768),
                    depths: tuple[int, ...] = (3, 3, 9, 3)) -> Shapes:
    """ConvNeXt-T (Liu et al. 2022; HF ``ConvNextModel``): 4 x 4 stem, per block a depthwise
    7 x 7 conv (``groups`` = channels: 1 x 1 cells), LayerNorm, 1 x 1 convs as Linear layers
    (4x expansion), layer scale (generic); 2 x 2 downsampling convs; a 1000-class head."""
    gain, bias = Kind("gain"), Kind("bias")
    shapes: Shapes = [((dims[0], 3, 4, 4), Kind("conv")), ((dims[0],), bias),
                      ((dims[0],), gain), ((dims[0],), bias)]
    for stage, (d, n) in enumerate(zip(dims, depths)):
        if stage:
            shapes += [((dims[stage - 1],), gain), ((dims[stage - 1],), bias),
                       ((d, dims[stage - 1], 2, 2), Kind("conv")), ((d,), bias)]
        for _ in range(n):
            shapes += [((d, 1, 7, 7), Kind("conv", groups=d)), ((d,), bias), ((d,), gain),
                       ((d,), bias), ((4 * d, d), Kind("linear")), ((4 * d,), bias),
                       ((d, 4 * d), Kind("linear")), ((d,), bias), ((d,), Kind("generic"))]
    return shapes + [((dims[-1],), gain), ((dims[-1],), bias), ((1000, dims[-1]), Kind("linear")),
                     ((1000,), bias)]


def gpt2_shapes(layers: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024) -> Shapes:
    io, gain, bias = Kind("linear_in_out"), Kind("gain"), Kind("bias")
    shapes: Shapes = [((vocab, d), Kind("embedding")), ((ctx, d), Kind("embedding"))]
    for _ in range(layers):
        shapes += [((d,), gain), ((d,), bias),
                   ((d, 3 * d), Kind("linear_in_out", blocks=3)), ((3 * d,), Kind("bias", 3)),
                   ((d, d), io), ((d,), bias), ((d,), gain), ((d,), bias),
                   ((d, 4 * d), io), ((4 * d,), bias), ((4 * d, d), io), ((d,), bias)]
    return shapes + [((d,), gain), ((d,), bias)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_params(shapes: Shapes, device: torch.device) -> list[torch.nn.Parameter]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s, _ in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-3
    return ps


def make_candidates(shapes: Shapes, ps: list, device: torch.device, reference: bool,
                    presets: list[str]) -> dict[str, tuple[Callable[[], object], float]]:
    """name -> (step function, state numel) for every optimiser, all on ``ps``."""
    kinds = {p: k for p, (_, k) in zip(ps, shapes)}
    grads = [p.grad for p in ps]
    out: dict[str, tuple[Callable[[], object], float]] = {}

    def floor() -> None:
        with torch.no_grad():
            torch._foreach_add_(ps, grads, alpha=-0.1)

    def two_pass() -> None:  # the least any normalised step can do: read, then update
        with torch.no_grad():
            torch._foreach_norm(grads)
            torch._foreach_add_(ps, grads, alpha=-0.1)

    out["floor _foreach_add_"] = (floor, 0)
    out["two passes: norm + add"] = (two_pass, 0)
    for name in presets:
        opt = hyperfree.AGD(ps, kinds=kinds, preset=name)
        out[f"AGD {name}"] = (opt.step, _state(opt))
    if reference:
        ref = ReferenceAGD(ps, kinds=kinds, preset="paper")
        out["AGD paper, reference twin"] = (ref.step, 0)
    hidden = [p for p, (_, k) in zip(ps, shapes) if p.dim() == 2 and k.name in
              ("linear", "linear_in_out") and min(p.shape) > 16]
    ctors = [("SGD foreach", lambda: torch.optim.SGD(ps, lr=1e-3, foreach=True)),
             ("SGD momentum foreach",
              lambda: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True)),
             ("Adam foreach", lambda: torch.optim.Adam(ps, lr=1e-6, foreach=True)),
             ("Adam fused", lambda: torch.optim.Adam(ps, lr=1e-6, fused=True))]
    if hidden and hasattr(torch.optim, "Muon"):
        ctors.append((f"Muon ({len(hidden)} 2-D matrices)",
                      lambda: torch.optim.Muon(hidden, lr=1e-4, weight_decay=0.0)))
    for name, ctor in ctors:
        opt = ctor()
        opt.step()  # materialise state
        out[name] = (opt.step, _state(opt))
    return out


def _state(opt: torch.optim.Optimizer) -> float:
    return sum(t.numel() for s in opt.state.values() for t in s.values()
               if torch.is_tensor(t) and t.dim() > 0)


def bench(shapes: Shapes, device: torch.device, rounds: int, reference: bool,
          presets: list[str]) -> list[tuple[str, float, float, float, float]]:
    ps = make_params(shapes, device)
    cands = make_candidates(shapes, ps, device, reference, presets)
    n_weights = sum(p.numel() for p in ps)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for fn, _ in cands.values():  # warm up
        fn()
    order = list(cands.items())
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name, (fn, _) in order:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)

    def p10(x: list[float]) -> float:
        return sorted(x)[(len(x) - 1) // 10]

    floor = times["floor _foreach_add_"]
    return [(name, statistics.median(times[name]) * 1e3,
             statistics.median(times[name]) / statistics.median(floor),
             p10(times[name]) / p10(floor), 1 + state / n_weights)
            for name, (_, state) in cands.items()]


# ---------------------------------------------------------------- operator counts (CPU proxy)
#: aten ops that only make a view (no kernel on an accelerator; ~1 µs of CPU dispatch each)
VIEW_OPS = frozenset(f"aten::{n}" for n in (
    "view", "narrow", "slice", "as_strided", "unflatten", "permute", "reshape", "_reshape_alias",
    "select", "unbind", "split", "split_with_sizes", "transpose", "t", "expand", "alias",
    "detach", "unsqueeze", "squeeze", "flatten", "chunk", "_unsafe_view", "numpy_T", "mT",
    "diagonal", "lift_fresh"))


def count_ops(shapes: Shapes, preset: str) -> tuple[int, int]:
    """Top-level aten calls of one AGD step (direct children of the step's profiler range):
    ``(all, those that compute)``; the others only make views."""
    from torch.profiler import ProfilerActivity, profile

    ps = make_params(shapes, torch.device("cpu"))
    opt = hyperfree.AGD(ps, kinds={p: k for p, (_, k) in zip(ps, shapes)}, preset=preset)
    opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.step()
    root = [e for e in prof.events() if e.name.startswith("Optimizer.step#")]
    top = [e.name for e in prof.events() if e.name.startswith("aten::")
           and e.cpu_parent is not None and e.cpu_parent.id == root[0].id]
    return len(top), sum(1 for n in top if n not in VIEW_OPS)


def op_families() -> dict[str, Callable[[int], Shapes]]:
    def fcn(n: int) -> Shapes:
        return [((64, 64), Kind("linear"))] * n

    def convnet(n: int) -> Shapes:
        return [((32, 32, 3, 3), Kind("conv"))] * (n - 1) + [((10, 32), Kind("linear"))]

    def gpt(n: int) -> Shapes:  # n tensors: blocks of 12 (gains, biases, packed QKV, ...)
        return gpt2_shapes(layers=(n + 11) // 12, d=32, vocab=64, ctx=16)[:n]

    return {"FCN (Linear)": fcn, "conv net (3x3 convs)": convnet,
            "GPT-2 blocks (every kind)": gpt}


def print_ops() -> None:
    sizes = (8, 16, 32, 64)
    print("\n## Operator calls of one step: compute ops (all top-level aten ops incl. views), "
          "torch.profiler, CPU")
    print("| family | preset | " + " | ".join(f"N={n}" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for fam, build in op_families().items():
        for preset in ("paper", "spectral-sphere"):
            counts = [count_ops(build(n), preset) for n in sizes]
            print(f"| {fam} | {preset} | " + " | ".join(f"{c} ({a})" for a, c in counts) + " |")


def check_no_sync(device: torch.device) -> str:
    for preset in PRESETS:
        ps = make_params(gpt2_shapes(layers=2, d=64, vocab=128, ctx=32), device)
        opt = hyperfree.AGD(ps, kinds={p: k for p, (_, k) in
                                       zip(ps, gpt2_shapes(layers=2, d=64, vocab=128, ctx=32))},
                            preset=preset)
        opt.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return ("AGD.step(), every preset: no host-device synchronisation after the first step "
            "(sync debug mode 'error')")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--sets", default="fcn,resnet18",
                    help="comma-separated: fcn,resnet18,convnext,gpt2")
    ap.add_argument("--gpt2-layers", type=int, default=12, help="layers of the gpt2 shape set")
    ap.add_argument("--presets", default=",".join(PRESETS),
                    help="comma-separated AGD presets to time (default: all)")
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) reference twin")
    ap.add_argument("--ops", action="store_true", help="print the operator-count table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    sets = {"fcn": ("FCN depth 8 x width 1024", fcn_shapes()),
            "resnet18": ("ResNet-18 (CIFAR) weight shapes", resnet18_shapes()),
            "convnext": ("ConvNeXt-T, every parameter (depthwise 7 x 7 convs)",
                         convnext_shapes()),
            "gpt2": (f"GPT-2 small, {args.gpt2_layers} layers, every parameter",
                     gpt2_shapes(args.gpt2_layers))}
    for key in args.sets.split(","):
        title, shapes = sets[key.strip()]
        n = sum(torch.Size(s).numel() for s, _ in shapes)
        print(f"\n## {title}: {len(shapes)} tensors, {n / 1e6:.1f}M weights, "
              f"{args.rounds} rounds")
        print(f"| {'optimiser':<30} | {'step ms':>8} | {'x floor':>7} | {'x floor p10':>11} | "
              f"{'memory x weights':>16} |")
        print(f"|{'-' * 32}|{'-' * 10}|{'-' * 9}|{'-' * 13}|{'-' * 18}|")
        for name, ms, ratio, ratio10, mem in bench(
                shapes, device, args.rounds, reference=not args.no_reference,
                presets=[p.strip() for p in args.presets.split(",") if p.strip()]):
            print(f"| {name:<30} | {ms:8.2f} | {ratio:7.2f} | {ratio10:11.2f} | {mem:16.1f} |")
    if args.ops:
        print_ops()
    if device.type == "cuda":
        print("\n" + check_no_sync(device))


if __name__ == "__main__":
    main()
