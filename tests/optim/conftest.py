"""Small bias-free models of the three kinds the AGD paper trains (defined here, independently
of ``hyperfree.models``, so the optimiser tests do not depend on the model registry), and a
fixture that restores the global parameter-kind registry after a test changes it."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn


class FCN(nn.Module):
    def __init__(self, d_in: int = 12, width: int = 16, depth: int = 4, d_out: int = 5):
        super().__init__()
        dims = [d_in] + [width] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x) * math.sqrt(2)
        return x


class VGGish(nn.Module):
    def __init__(self, c: int = 3, width: int = 6, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width, affine=False),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width, affine=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(2 * width, classes, bias=False)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, affine=False)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, affine=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                      if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        short = self.short(out) if self.short is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + short


class PreActResNet(nn.Module):
    def __init__(self, c: int = 3, width: int = 4, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(PreActBlock(width, width, 1), PreActBlock(width, 2 * width, 2))
        self.bn = nn.BatchNorm2d(2 * width, affine=False)
        self.head = nn.Linear(2 * width, classes, bias=False)

    def forward(self, x):
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(out.mean(dim=(2, 3)))


def make(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A model and an input batch for it."""
    if kind == "fcn":
        return FCN(), torch.randn(16, 12)
    if kind == "vgg":
        return VGGish(), torch.randn(8, 3, 8, 8)
    return PreActResNet(), torch.randn(8, 3, 8, 8)


@pytest.fixture
def restore_kind_rules():
    """Undo any change a test makes to the global kinds registry (RULES, TIE_RESOLUTION)."""
    from hyperfree.optim import kinds

    rules, ties = dict(kinds.RULES), dict(kinds.TIE_RESOLUTION)
    yield kinds
    kinds.RULES.clear()
    kinds.RULES.update(rules)
    kinds.TIE_RESOLUTION.clear()
    kinds.TIE_RESOLUTION.update(ties)


class Zoo(nn.Module):
    """One model with every parameter kind AGD knows (tiny; float64 in the tests).

    Sequence branch: tied Embedding(padding_idx) + EmbeddingBag -> HF-style Conv1D (optional:
    it cannot be pickled, its class claims to live in transformers) -> Linear -> LayerNorm ->
    self-attention (packed Q/K/V) -> RMSNorm -> attention with kdim/vdim (separate Q/K/V) ->
    2-layer bidirectional LSTM -> GRU -> RNN -> head tied to the embedding. Image branches:
    Conv2d -> BatchNorm2d -> grouped Conv2d -> GroupNorm -> grouped ConvTranspose2d ->
    InstanceNorm2d(affine) -> Conv2d 1x1; Conv1d -> ConvTranspose1d -> BatchNorm1d; Conv3d.
    A nonlinearity sits between every bias and the next normalisation that would cancel it.
    ``attn_bias=False`` drops the attention biases, whose key part has a gradient that is zero
    in exact arithmetic and ~1e-17 noise in floating point (docs/agd-rules.md §5).
    """

    V, D = 12, 8

    def __init__(self, attn_bias: bool = False, hf: bool = True):
        super().__init__()
        from .agd_spec import HFConv1D

        V, D = self.V, self.D
        self.embed = nn.Embedding(V, D, padding_idx=0)
        self.bag = nn.EmbeddingBag(V, D, mode="mean")
        self.proj = HFConv1D(10, D) if hf else nn.Linear(D, 10)
        self.lin = nn.Linear(10, D)
        self.ln = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, bias=attn_bias, add_bias_kv=attn_bias,
                                          batch_first=True)
        self.rms = nn.RMSNorm(D)
        self.kv = nn.Linear(D, 8)
        self.cross = nn.MultiheadAttention(D, 2, kdim=5, vdim=3, bias=attn_bias,
                                           batch_first=True)
        self.lstm = nn.LSTM(D, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(8, 4, batch_first=True)
        self.rnn = nn.RNN(4, D, batch_first=True)
        self.head = nn.Linear(D, V, bias=False)
        self.head.weight = self.embed.weight
        self.img = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(4),
            nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False), nn.GroupNorm(2, 4), nn.Tanh(),
            nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2), nn.Tanh(),
            nn.InstanceNorm2d(6, affine=True), nn.Conv2d(6, 2, 1))
        self.seq1d = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Tanh(), nn.ConvTranspose1d(4, 2, 3),
                                   nn.Tanh(), nn.BatchNorm1d(2))
        self.vol = nn.Conv3d(1, 2, 2)

    def forward(self, ids, img, sig, vol):
        h = self.embed(ids) + self.bag(ids)[:, None]
        h = self.ln(self.lin(torch.tanh(self.proj(h))))
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = self.rms(h)
        kv = self.kv(h)
        h = h + self.cross(h, kv[..., :5], kv[..., 5:], need_weights=False)[0]
        h = self.rnn(self.gru(self.lstm(h)[0])[0])[0]
        logits = self.head(torch.tanh(h))
        return logits, self.img(img), self.seq1d(sig), self.vol(vol)


def zoo_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A batch for :class:`Zoo` (padding token 0 included; tokens 9..11 unused)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 9, (2, 5), generator=gen)
    ids[0, 0] = 0
    return (ids, torch.randn(2, 2, 4, 4, generator=gen, dtype=torch.float64),
            torch.randn(2, 3, 7, generator=gen, dtype=torch.float64),
            torch.randn(2, 1, 3, 3, 3, generator=gen, dtype=torch.float64))


def zoo_loss(model: nn.Module, seed: int = 0) -> torch.Tensor:
    """Cross-entropy of the tokens plus square losses of the image branches."""
    ids, img, sig, vol = zoo_inputs(seed)
    logits, a, b, c = model(ids, img, sig, vol)
    gen = torch.Generator().manual_seed(seed + 1)
    ce = nn.functional.cross_entropy(logits.flatten(0, 1), torch.randint(0, Zoo.V, (10,),
                                                                          generator=gen))
    return ce + sum(((t - 0.3) ** 2).mean() for t in (a, b, c))
