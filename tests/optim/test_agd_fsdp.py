"""AGD on FSDP2-sharded parameters equals AGD on one process (2 gloo ranks on CPU, fork).

The model is a tiny transformer with every kind a language model has, sharded unevenly along
dim 0 by ``fully_shard`` (per block, then the root): embeddings (11 and 7 rows: 6/5 and 4/3),
LayerNorm gains and biases (5 features: 3/2), packed Q/K/V ``in_proj_weight``/``in_proj_bias``
(18 rows: the K block is split between the ranks), Linear layers with biases, a grouped conv
whose middle group is split between the ranks, and a 1-output head whose weight and bias live
on rank 0 only (rank 1 holds empty shards). Each rank trains on its half of a global batch;
the single process trains on the whole batch. After 4 steps, in float64:

* η of every step and every weight equal the single process (1e-10) for ``paper``,
  ``spectral-sphere`` (Newton–Schulz, sign gains, momentum, retraction) with both ways of
  orthogonalising sharded matrices (``owner``, ``gather``), and the reference twin
  (:class:`tests.optim.reference.ReferenceAGD`, which gathers every tensor) — except the K block of each
  ``in_proj_bias``: its gradient is zero in exact arithmetic and ~1e-17 noise in floating point,
  AGD normalises that noise (docs/agd-rules.md §5), and the noise depends on the summation
  order, which sharding changes;
* ``init_weights`` on the sharded model (seeded alike) gives the unsharded initialisation;
* the collectives per step are the designed ones: ``paper`` ONE all-reduce; ``spectral-sphere``
  one for the gradients' finite flag (momentum), one all-reduce of the partial sums, one of the
  retraction's norms, plus two ``all_to_all`` (owner) or one ``all_gather`` (gather).
Run: ``pytest tests/optim/test_agd_fsdp.py`` (about 10 s).
"""
from __future__ import annotations

import functools
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import hyperfree
from hyperfree.optim import Kind
from hyperfree.optim.infer import read_kinds

from .reference import ReferenceAGD

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

D, V, T, STEPS = 6, 11, 7, 4
CONFIGS = [("paper", {}, 1), ("spectral-sphere", {"sharded_polar": "owner"}, 5),
           ("spectral-sphere", {"sharded_polar": "gather"}, 4),
           ("spectral-sphere", {"reference": True}, None),
           ("spectral-fresh", {}, 4),  # reduce, 2 all_to_all (polar), the finite flag
           ("spectral-average", {}, 5),  # and the retraction's reduce (norms and ‖Δ‖²)
           ("spectral-average", {"reference": True}, None),
           ("spectral-fading", {}, 5),  # its hold adds no collective (it reads G once reduced)
           ("spectral-damped", {}, 5),  # the same state, G damped instead
           # the default: both heads' input scales averaged over the ranks (one all_reduce
           # of its own)
           ("spectral-head", {}, 5)]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(D, 10), nn.Linear(10, D)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(torch.tanh(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.conv = nn.Conv1d(D, 6, 3, padding=1, groups=3)
        self.conv2 = nn.Conv1d(6, 5, 3, padding=1)
        self.ln_f, self.head, self.value = nn.LayerNorm(5), nn.Linear(5, V), nn.Linear(5, 1)

    def forward(self, ids):
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        x = self.conv2(torch.tanh(self.conv(x.transpose(1, 2)))).transpose(1, 2)
        h = self.ln_f(x)
        return self.head(h), self.value(h)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyTransformer().double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    return model


def _loss(model: nn.Module, t: int, rows: slice) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + t)
    ids, y = torch.randint(0, V, (4, T), generator=gen), torch.randint(0, V, (4, T), generator=gen)
    logits, value = model(ids[rows])
    return nn.functional.cross_entropy(logits.flatten(0, 1), y[rows].flatten()) + \
        value.square().mean()


@functools.cache
def _kinds() -> dict[str, Kind]:
    """Every parameter's kind read from one forward, forks included (the residual branches),
    declared to the single process and the ranks alike, so that this test checks the sharded
    step alone (the reading of a sharded model's first forward: tests/train/test_train_fsdp)."""
    ids = torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(7))
    kinds = {name: kind for name, (kind, _) in read_kinds(_model(), ids).items()}
    assert sum(k.forks == 1 for k in kinds.values()) == 24  # 2 blocks x 12 tensors
    return kinds


def _train(model: nn.Module, preset: str, kw: dict, rows: slice) -> tuple[hyperfree.AGD, list]:
    kw = dict(kw)
    opt = (ReferenceAGD if kw.pop("reference", False) else hyperfree.AGD)(
        model, preset=preset, kinds=_kinds(), **kw)
    etas = []
    for t in range(STEPS):
        opt.zero_grad()
        _loss(model, t, rows).backward()
        opt.step()
        etas.append(float(opt.eta))
    return opt, etas


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                           world_size=world)
    from torch.distributed.fsdp import fully_shard

    model = TinyTransformer().double()  # AGD's init on shards, seeded alike on every rank
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    init = {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}
    results = []
    for preset, kw, _ in CONFIGS:
        model = _model()
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        opt, etas = _train(model, preset, kw, slice(2 * rank, 2 * rank + 2))
        weights = {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}
        calls = opt._sharded.collectives / STEPS if not kw.get("reference") else None
        heads = len(opt._head.heads) if opt._head is not None else 0
        results.append((weights, etas, calls, heads))
    if rank == 0:
        torch.save((init, results), out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp2_sharded_agd_equals_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    singles = []
    for preset, kw, _ in CONFIGS:  # in the parent first: the forked ranks inherit the imports
        model = _model()
        _, etas = _train(model, preset, {}, slice(0, 4))
        singles.append(({k: v.detach().clone() for k, v in model.state_dict().items()}, etas))
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_worker, args=(2, _free_port(), out), nprocs=2, join=True,
                       start_method="fork")
    init, sharded = torch.load(out, weights_only=True)
    for name, w in _model().state_dict().items():
        torch.testing.assert_close(init[name], w, rtol=0, atol=0, msg=f"init of {name}")
    for (preset, kw, calls), (w1, e1), (w2, e2, c2, heads) in zip(CONFIGS, singles, sharded):
        what = f"{preset} {kw}"
        assert heads == (2 if preset == "spectral-head" else 0), what  # the logits and value
        assert e2 == pytest.approx(e1, rel=1e-10), what
        for name, w in w1.items():
            got = w2[name]
            if name.endswith("attn.in_proj_bias"):  # drop the noise-driven K block
                w, got = torch.cat([w[:D], w[2 * D:]]), torch.cat([got[:D], got[2 * D:]])
            torch.testing.assert_close(got, w, rtol=1e-10, atol=1e-12,
                                       msg=lambda m, n=name: f"{what} {n}: {m}")
        assert c2 == calls, what
