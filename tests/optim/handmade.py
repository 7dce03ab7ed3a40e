"""Hand-written models the way people write them: their own norm classes (one named
``LayerNorm``, shadowing torch's), raw ``nn.Parameter`` matrices, packed projections, learned
tokens, position tables, scalars and SSM/RWKV-style tensors — nothing AGD's rules table covers
by type. Used by ``test_agd_infer.py`` (what the forward says each parameter is) and
``test_agd_zoo.py`` (AGD trains them with zero declarations). Not a test file.

Each ``make_*`` returns ``(model, batch, loss_fn)``; ``EXPECTED`` lists, for the reading tests,
the kind every parameter should be read as ("generic" where no rule applies).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

V, T, D, H = 48, 8, 16, 2  # vocab, context, width, heads


class LayerNorm(nn.Module):
    """A hand-written LayerNorm (the common pattern): same name as torch's, not a subclass."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    """Llama-style: ``weight * x / rms(x)``, the weight applied last."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def rotate_half(x):
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    """Packed Q/K/V as ONE raw matrix stored ``(d_in, 3·d)`` (``x @ w``), split in three;
    rotary embeddings slice q and k into halves (not packing: q is also used whole)."""

    def __init__(self, d: int = D, heads: int = H, causal: bool = True) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.w_qkv = nn.Parameter(torch.randn(d, 3 * d) / math.sqrt(d))
        self.proj = nn.Linear(d, d)
        pos = torch.arange(T)[:, None] / 10 ** (torch.arange(d // heads // 2) / (d // heads))
        self.register_buffer("cos", torch.cos(pos).repeat(1, 2), persistent=False)
        self.register_buffer("sin", torch.sin(pos).repeat(1, 2), persistent=False)

    def forward(self, x):
        B, n, d = x.shape
        q, k, v = (x @ self.w_qkv).split(d, dim=-1)
        q, k, v = (t.view(B, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        cos, sin = self.cos[:n], self.sin[:n]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(B, n, d))


class Block(nn.Module):
    def __init__(self, norm: type, causal: bool = True) -> None:
        super().__init__()
        self.n1, self.n2 = norm(D), norm(D)
        self.attn = Attention(causal=causal)
        self.up = nn.Linear(D, 4 * D)  # GLU: gate and up packed, chunked in two
        self.down = nn.Linear(2 * D, D)

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        gate, up = self.up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class TinyGPT(nn.Module):
    """Token embedding tied to the head (``F.linear(h, tok.weight)``), a ``(1, T, d)``
    position table, blocks with the hand-written norms, a scalar logit temperature."""

    def __init__(self, depth: int = 2, norm: type = LayerNorm) -> None:
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Parameter(0.02 * torch.randn(1, T, D))
        self.blocks = nn.ModuleList(Block(norm) for _ in range(depth))
        self.norm = RMSNorm(D)
        self.temp = nn.Parameter(torch.tensor(1.0))

    def forward(self, ids):
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for b in self.blocks:
            x = b(x)
        return F.linear(self.norm(x), self.tok.weight) * self.temp


class TinyViT(nn.Module):
    """Conv patches, a learned ``cls`` token joined to them, a position table, blocks."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, D, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 5, D))
        self.block = Block(LayerNorm, causal=False)
        self.norm = LayerNorm(D)
        self.head = nn.Linear(D, classes)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.block(x))[:, 0])


class TinySSM(nn.Module):
    """Mamba-like: packed in-projection (x and gate), a depthwise causal conv, ``A_log``
    (used through ``exp``), ``D`` (a per-channel skip), a diagonal scan."""

    def __init__(self, d_state: int = 4) -> None:
        super().__init__()
        inner = 2 * D
        self.embed = nn.Embedding(V, D)
        self.norm = RMSNorm(D)
        self.in_proj = nn.Linear(D, 2 * inner, bias=False)
        self.conv = nn.Conv1d(inner, inner, 3, groups=inner, padding=2)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out = nn.Linear(inner, D, bias=False)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        h = self.norm(self.embed(ids))
        x, gate = self.in_proj(h).chunk(2, dim=-1)
        x = F.silu(self.conv(x.transpose(1, 2))[..., : ids.shape[1]]).transpose(1, 2)
        decay = torch.exp(-torch.exp(self.A_log)).mean(-1)  # (inner,)
        state, ys = torch.zeros_like(x[:, 0]), []
        for t in range(x.shape[1]):
            state = decay * state + x[:, t]
            ys.append(state)
        y = torch.stack(ys, 1) + x * self.D
        return self.head(h + self.out(y * F.silu(gate)))


class TinyRWKV(nn.Module):
    """RWKV-style token shift: per-channel mixing vectors ``x·m + x_prev·(1 − m)`` and a
    decay used through ``exp``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.ln = nn.LayerNorm(D)
        self.time_mix = nn.Parameter(torch.rand(1, 1, D))
        self.time_decay = nn.Parameter(-torch.rand(D))
        self.key = nn.Linear(D, D, bias=False)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        x = self.ln(self.embed(ids))
        prev = F.pad(x, (0, 0, 1, -1))
        k = self.key(x * self.time_mix + prev * (1 - self.time_mix))
        return self.head(x + k * torch.exp(self.time_decay))


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(seed))


def _lm_loss(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))


def _cls_loss(model, batch):
    img, y = batch
    return F.cross_entropy(model(img), y)


def make_gpt(norm: type = LayerNorm):
    return TinyGPT(norm=norm), _ids(), _lm_loss


def make_vit():
    gen = torch.Generator().manual_seed(0)
    return TinyViT(), (torch.randn(4, 3, 8, 8, generator=gen),
                       torch.randint(0, 3, (4,), generator=gen)), _cls_loss


def make_ssm():
    return TinySSM(), _ids(), _lm_loss


def make_rwkv():
    return TinyRWKV(), _ids(), _lm_loss


MODELS = {"gpt": make_gpt, "gpt-rmsnorm": lambda: make_gpt(RMSNorm), "vit": make_vit,
          "ssm": make_ssm, "rwkv": make_rwkv}


def example(name: str, batch):
    """The model's input in ``batch`` (what AGD(model, example=...) takes)."""
    return batch[0] if name == "vit" else batch[:, :-1]


#: what the forward says every parameter of the models above is (by local pattern)
EXPECTED = {
    "tok.weight": "embedding", "pos": "generic", "temp": "generic", "cls": "bias",
    "n1.weight": "gain", "n1.bias": "bias", "n2.weight": "gain", "n2.bias": "bias",
    "norm.weight": "gain", "norm.bias": "bias",
    "attn.w_qkv": "linear_in_out(x3)", "attn.proj.weight": "linear", "attn.proj.bias": "bias",
    "up.weight": "linear(x2)", "up.bias": "bias(x2)", "down.weight": "linear",
    "down.bias": "bias", "patch.weight": "conv", "patch.bias": "bias", "head.weight": "linear",
    "head.bias": "bias", "embed.weight": "embedding", "in_proj.weight": "linear(x2)",
    "conv.weight": "conv(groups=32)", "conv.bias": "bias", "A_log": "generic", "D": "gain",
    "out.weight": "linear", "ln.weight": "gain", "ln.bias": "bias", "time_mix": "gain",
    "time_decay": "generic", "key.weight": "linear",
}


def expected(name: str) -> str:
    """The expected kind of parameter ``name`` (its longest matching suffix in EXPECTED)."""
    key = max((k for k in EXPECTED if name == k or name.endswith("." + k)), key=len)
    return EXPECTED[key]
