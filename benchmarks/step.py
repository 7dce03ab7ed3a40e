"""Step-time benchmark: AGD against the memory-bound floor and torch.optim, side by side.

For (a) an FCN of depth 8 and width 1024 (7.1M weights) and (b) the weight shapes of a CIFAR
pre-activation ResNet-18 (11.2M), gradients are filled once and every optimiser's ``step()`` is
timed in interleaved rounds (so machine noise hits all of them alike); the table gives medians
and the ratio to the floor ``torch._foreach_add_(params, grads, alpha=-0.1)``. It also prints the
optimiser state each one keeps, relative to the weights.

    python benchmarks/step.py [--device cpu|cuda] [--rounds 30] [--threads 2]

On CUDA it also runs AGD once under ``torch.cuda.set_sync_debug_mode("error")`` to prove that
``step()`` never synchronises with the host.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import hyperfree


def fcn_shapes() -> list[tuple[int, ...]]:
    return [(1024, 784)] + [(1024, 1024)] * 6 + [(10, 1024)]


def resnet18_shapes() -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            shapes.append((cout, cin, 3, 3))
            shapes.append((cout, cout, 3, 3))
            if block == 0 and (stride != 1 or cin != cout):
                shapes.append((cout, cin, 1, 1))
            cin = cout
    return shapes + [(10, 512)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_candidates(shapes, device) -> dict[str, tuple[Callable[[], object], int]]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    out: dict[str, tuple[Callable[[], object], int]] = {}

    def fresh():
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-3
        return ps

    ps = fresh()
    grads = [p.grad for p in ps]

    def floor() -> None:
        with torch.no_grad():
            torch._foreach_add_(ps, grads, alpha=-0.1)

    out["floor _foreach_add_"] = (floor, 0)
    agd_params = fresh()
    agd = hyperfree.AGD(agd_params)
    out["AGD (hyperfree)"] = (agd.step, 0)
    ref_params = fresh()
    ref = hyperfree.AGD(ref_params, foreach=False)
    out["AGD reference twin"] = (ref.step, 0)
    for name, ctor in [("SGD foreach", lambda p: torch.optim.SGD(p, lr=1e-3, foreach=True)),
                       ("SGD momentum foreach",
                        lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True)),
                       ("Adam foreach", lambda p: torch.optim.Adam(p, lr=1e-6, foreach=True)),
                       ("Adam fused", lambda p: torch.optim.Adam(p, lr=1e-6, fused=True))]:
        params = fresh()
        opt = ctor(params)
        opt.step()  # materialise state
        state = sum(t.numel() for s in opt.state.values() for t in s.values()
                    if torch.is_tensor(t) and t.dim() > 0)
        out[name] = (opt.step, state)
    return out


def bench(shapes, device, rounds: int) -> list[tuple[str, float, float, float]]:
    cands = make_candidates(shapes, device)
    n_weights = sum(torch.Size(s).numel() for s in shapes)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for fn, _ in cands.values():  # warm up
        fn()
    _sync(device)
    for _ in range(rounds):
        for name, (fn, _) in cands.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    floor = statistics.median(times["floor _foreach_add_"])
    rows = []
    for name, (_, state) in cands.items():
        med = statistics.median(times[name])
        rows.append((name, med * 1e3, med / floor, 1 + state / n_weights))
    return rows


def check_no_sync(device: torch.device) -> str:
    ps = [torch.nn.Parameter(torch.randn(s, device=device)) for s in resnet18_shapes()]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = hyperfree.AGD(ps)
    opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "AGD.step(): no host-device synchronisation (sync debug mode 'error')"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    for title, shapes in [("FCN depth 8 x width 1024", fcn_shapes()),
                          ("ResNet-18 (CIFAR) weight shapes", resnet18_shapes())]:
        n = sum(torch.Size(s).numel() for s in shapes)
        print(f"\n## {title}: {len(shapes)} tensors, {n / 1e6:.1f}M weights, "
              f"median of {args.rounds} rounds")
        print(f"| {'optimiser':<22} | {'step ms':>8} | {'x floor':>7} | {'memory x weights':>16} |")
        print(f"|{'-' * 24}|{'-' * 10}|{'-' * 9}|{'-' * 18}|")
        for name, ms, ratio, mem in bench(shapes, device, args.rounds):
            print(f"| {name:<22} | {ms:8.2f} | {ratio:7.2f} | {mem:16.0f} |")
    if device.type == "cuda":
        print("\n" + check_no_sync(device))


if __name__ == "__main__":
    main()
