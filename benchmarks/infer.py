"""Inference-of-kinds benchmark: how long AGD takes to read a 12-layer model's forward.

``AGD(model)`` reads one forward (:mod:`hyperfree.optim.infer`): for the parameters the rules
table does not cover, the packing it cannot tell, and every tensor's forks (its lineage through
the forward's residual sums). This script times that reading on
12-layer models at GPT-2-small width (d = 768, 12 heads, a 16-token example):

* ``handmade``: a pre-norm GPT written by hand — its own RMSNorm class, a raw ``(d, 3d)``
  packed Q/K/V matrix, a GLU MLP packed in one Linear, a ``(1, T, d)`` position table, a head
  tied through ``F.linear`` (vocabulary 50257; nothing of it but the Linear/Embedding layers is
  in the table);
* ``llama`` and ``gpt2`` (Hugging Face ``transformers``, built from a config, if installed):
  RMSNorm gains to read, and GPT-2's packed ``c_attn``.

For each: the forward alone (no reading), ``read_kinds`` (the reading: forward under the
dispatch mode + deciding every kind), and ``AGD(model, example=...)`` (table + reading + the
optimiser's set-up), as the median of ``--rounds`` runs, and how many parameters were read
(not from the table). The target is < 1 s for a 12-layer model on CPU.

    python benchmarks/infer.py [--rounds 5] [--threads 1] [--models handmade,llama,gpt2]
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import hyperfree
from hyperfree.optim.infer import read_kinds

D, HEADS, LAYERS, VOCAB, T = 768, 12, 12, 50257, 16


class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n1, self.n2 = RMSNorm(D), RMSNorm(D)
        self.qkv = nn.Parameter(torch.randn(D, 3 * D) * 0.02)
        self.proj = nn.Linear(D, D, bias=False)
        self.up = nn.Linear(D, 2 * 4 * D, bias=False)
        self.down = nn.Linear(4 * D, D, bias=False)

    def forward(self, x):
        B, n, _ = x.shape
        q, k, v = (self.n1(x) @ self.qkv).split(D, dim=-1)
        q, k, v = (t.view(B, n, HEADS, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, n, D))
        gate, up = self.up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class HandmadeGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.zeros(1, 1024, D))
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = RMSNorm(D)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return F.linear(self.norm(x), self.tok.weight)


def _hf(name: str):
    import transformers

    transformers.logging.set_verbosity_error()
    if name == "llama":
        cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=D, intermediate_size=4 * D,
                                       num_hidden_layers=LAYERS, num_attention_heads=HEADS)
        return transformers.LlamaForCausalLM(cfg)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=LAYERS))


def _median(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="handmade,llama,gpt2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} thread(s), torch "
          f"{torch.__version__}, 12 layers, d={D}, example (1, {T}) tokens, median of "
          f"{args.rounds}")
    print(f"{'model':10s} {'params':>8s} {'forward':>9s} {'reading':>9s} {'AGD(...)':>9s} "
          f"{'read':>5s}")
    for name in args.models.split(","):
        if name != "handmade" and importlib.util.find_spec("transformers") is None:
            print(f"{name:10s} skipped (transformers not installed)")
            continue
        torch.manual_seed(0)
        model = HandmadeGPT() if name == "handmade" else _hf(name)
        ids = torch.randint(0, 1000, (1, T))
        example = ids if name == "handmade" else {"input_ids": ids}

        def forward():
            with torch.no_grad():
                model(ids) if name == "handmade" else model(input_ids=ids)

        forward()  # warm-up
        t_fwd = _median(forward, args.rounds)
        t_read = _median(lambda: read_kinds(model, example), args.rounds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_agd = _median(lambda: hyperfree.AGD(model, example=example), args.rounds)
            opt = hyperfree.AGD(model, example=example)
        read = sum(i.origin not in ("table", "declared") for i in opt._infos.values())
        n = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:10s} {n:7.0f}M {t_fwd * 1e3:7.0f}ms {t_read * 1e3:7.0f}ms "
              f"{t_agd * 1e3:7.0f}ms {read:5d}")


if __name__ == "__main__":
    main()
