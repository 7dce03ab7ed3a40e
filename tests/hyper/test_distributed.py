"""Towers under data parallelism: 2 gloo processes on CPU (127.0.0.1, a free port, forked).

* Two ranks, each on half of every batch and each built from a *different* initialisation
  (the HyperModule broadcasts rank 0's), end with the weights and hyperparameters of one
  process on the whole batch: to 1e-12 in float64 (fused and reference level 0, with
  clipping and loss scaling) and 1e-6 in float32 (a three-level tower). Both ranks agree.
* One ``all_reduce`` per step, whatever the number of tensors.
* BatchNorm statistics are broadcast from rank 0 before a forward pass with gradients, as
  DDP does, so the ranks' buffers agree.

Run: ``.venv/bin/python -m pytest -q tests/hyper/test_distributed.py``
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper

STEPS, BATCH = 6, 32
CASES: dict[str, dict[str, Any]] = {
    "sgd/sgd float64": dict(text="sgd(0.05)/sgd(1e-3)", dtype=torch.float64),
    "adam/sgd float64 reference": dict(text="adam(1e-2)/sgd(1e-5)", dtype=torch.float64,
                                       fused=False),
    "adam/sgd float64 clip + scale": dict(text="adam(1e-2)/sgd(1e-5)", dtype=torch.float64,
                                          clip_grad_norm=0.5, scale=1024.0),
    "3 levels float32": dict(text="sgd(0.05, 0.9)/adam(1e-3)/sgd(1e-4)", dtype=torch.float32),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(case: dict[str, Any], rank: int, world: int, *, batchnorm: bool = False
           ) -> hyper.HyperModule:
    """STEPS steps on this rank's share of every batch; the model's init differs per rank."""
    dtype, scale = case["dtype"], case.get("scale")
    torch.manual_seed(rank)
    layers = [nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)]
    if batchnorm:
        layers.insert(1, nn.BatchNorm1d(16))
    kwargs = {k: case[k] for k in ("fused", "clip_grad_norm") if k in case}
    net = hyper.HyperModule(nn.Sequential(*layers).to(dtype), hyper.parse(case["text"]),
                            **kwargs)
    gen = torch.Generator().manual_seed(0)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for _ in range(STEPS):
        x = torch.randn(BATCH, 8, generator=gen, dtype=dtype)[share]
        y = torch.randint(0, 3, (BATCH,), generator=gen)[share]
        loss = F.cross_entropy(net(x), y)
        net.step(loss if scale is None else loss * scale, scale=scale)
    return net


def _result(net: hyper.HyperModule) -> dict[str, Any]:
    return {"weights": [p.detach().clone() for p in net.model.parameters()],
            "hyper": net.hyperparameters()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        calls = [0]
        all_reduce = dist.all_reduce

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return all_reduce(*args, **kwargs)

        dist.all_reduce = counted  # type: ignore[assignment]
        results = {name: _result(_train(case, rank, world)) for name, case in CASES.items()}
        dist.all_reduce = all_reduce  # type: ignore[assignment]
        bn = _train(CASES["sgd/sgd float64"], rank, world, batchnorm=True)
        bn.eval()
        bn(torch.zeros(2, 8, dtype=torch.float64))  # grad enabled: buffers synced, not updated
        results["buffers"] = [b.clone() for b in bn.model.buffers()]
        results["all_reduce calls"] = calls[0]
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")
def test_two_gloo_ranks_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = {name: _result(_train(case, 0, 1)) for name, case in CASES.items()}
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, case in CASES.items():
        tol = 1e-12 if case["dtype"] == torch.float64 else 1e-6
        want = single[name]
        assert want["hyper"][0]["lr"] not in (0.05, 0.01)  # the tower really moved
        for got in ranks:
            for a, b in zip(got[name]["hyper"], want["hyper"], strict=True):
                assert a == pytest.approx(b, rel=tol), name
            for p, q in zip(got[name]["weights"], want["weights"], strict=True):
                torch.testing.assert_close(p, q, rtol=tol, atol=tol * 1e-2, msg=name)
        assert ranks[0][name]["hyper"] == ranks[1][name]["hyper"]
    assert ranks[0]["all_reduce calls"] == ranks[1]["all_reduce calls"] == STEPS * len(CASES)
    for a, b in zip(ranks[0]["buffers"], ranks[1]["buffers"], strict=True):
        assert torch.equal(a, b)
