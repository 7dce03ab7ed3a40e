"""A pre-norm causal transformer for character-level language modelling (GPT-2 layout).

The architecture of Radford et al. 2019 ("Language Models are Unsupervised Multitask
Learners", GPT-2: LayerNorm before each sub-layer, a final LayerNorm) at the small sizes of
Karpathy's nanoGPT character-level Shakespeare setting; written here from the papers. With
vocabulary ``V``, context ``T``, width ``d``, ``h`` heads and ``depth`` blocks::

    x   = E[tokens] + P[0:T']                   # (B, T') int64 -> (B, T', d); E: (V, d), P: (T, d)
    for each of the depth blocks:
        x = x + attn(ln_1(x))                   # causal multi-head self-attention, (B, T', d)
        x = x + W_2 gelu(W_1 ln_2(x) + b_1) + b_2   # MLP: W_1 (4d, d), W_2 (d, 4d)
    logits = H ln_f(x)                          # (B, T', V); H: (V, d), no bias

``attn`` is ``torch.nn.MultiheadAttention(d, h, bias=True, batch_first=True)``: its packed
``in_proj_weight`` (3d, d) holds W_Q, W_K, W_V stacked (each (d, d)), ``in_proj_bias`` (3d,)
their biases, and ``out_proj`` is a (d, d) Linear with bias. Position ``t`` attends to positions
``0..t`` only, so the logits at ``t`` depend on ``tokens[:, :t+1]`` alone. With
``tie_weights=True`` the head ``H`` is the token embedding ``E`` itself (one ``Parameter``).

Parameter count (:func:`gpt_num_parameters`)::

    N = (2 - tie) V d + T d + depth (12 d² + 13 d) + 2 d

per block: ln_1, ln_2 (2d each), in_proj (3d² + 3d), out_proj (d² + d), MLP (8d² + 5d).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from ._registry import register_model

__all__ = ["GPTConfig", "GPT", "Block", "gpt_num_parameters", "gpt"]


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Sizes of a :class:`GPT`: vocabulary ``V``, context ``T = seq_len``, ``depth`` blocks of
    ``width`` ``d`` with ``heads`` heads of size ``d / heads``, MLP hidden ``mlp_ratio · d``."""

    vocab_size: int
    seq_len: int = 64
    depth: int = 4
    width: int = 128
    heads: int = 4
    tie_weights: bool = False
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "depth", "width", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be an integer >= 1, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}; pick "
                             "a width that is a multiple of the number of heads")
        if not isinstance(self.tie_weights, bool):
            raise ValueError(f"tie_weights must be True or False, got {self.tie_weights!r}")


def gpt_num_parameters(cfg: GPTConfig) -> int:
    """The closed form ``(2 - tie) V d + T d + depth · block + 2 d`` (module docstring).

    With MLP ratio ``r`` a block has ``block = (4 + 2r) d² + (9 + r) d`` parameters (``r = 4``:
    ``12 d² + 13 d``).
    """
    V, T, d, r = cfg.vocab_size, cfg.seq_len, cfg.width, cfg.mlp_ratio
    block = (4 + 2 * r) * d * d + (9 + r) * d
    return (1 if cfg.tie_weights else 2) * V * d + T * d + cfg.depth * block + 2 * d


class Block(nn.Module):
    """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, shapes (B, T', d) -> (B, T', d)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.width
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.heads, bias=True, batch_first=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * d, d))

    def forward(self, x: Tensor, causal: Tensor) -> Tensor:
        # x: (B, T', d); causal: (T', T') bool, True above the diagonal = "may not attend"
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False, is_causal=True)[0]
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The transformer of the module docstring, initialised as GPT-2 / nanoGPT.

    Initialisation (done in the constructor, the model's own default, e.g. for Adam/AdamW
    baselines): every Linear weight, the packed ``in_proj_weight``, the token embedding ``E``
    and the position embedding ``P`` ~ N(0, 0.02²); the residual output projections (each
    block's ``attn.out_proj.weight`` and second MLP weight ``mlp[2].weight``) ~
    N(0, (0.02 / sqrt(2·depth))²), so the residual stream's variance does not grow with depth;
    every bias (``in_proj_bias`` included) = 0; LayerNorm gains 1 and biases 0. A tied head is
    the embedding's tensor and is drawn once, as the embedding.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V, T, d = cfg.vocab_size, cfg.seq_len, cfg.width
        self.tok_emb = nn.Embedding(V, d)
        self.pos_emb = nn.Embedding(T, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        causal = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every parameter by the GPT-2 rule of the class docstring."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.cfg.depth)
        for module in self.modules():
            if module is self.head and self.cfg.tie_weights:
                continue  # the head's weight is tok_emb.weight, drawn as the embedding
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, 0.0, std)
                nn.init.zeros_(module.in_proj_bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, 0.0, residual_std)
            nn.init.normal_(block.mlp[2].weight, 0.0, residual_std)

    def forward(self, tokens: Tensor) -> Tensor:  # tokens: (B, T') int64 -> (B, T', V) logits
        if tokens.dim() != 2:
            raise ValueError(f"GPT takes (B, T) token indices, got shape {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if n > self.cfg.seq_len:
            raise ValueError(f"sequence length {n} exceeds the context seq_len={self.cfg.seq_len}; "
                             "feed at most seq_len tokens or build the model with a larger one")
        pos = torch.arange(n, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)  # (B, T', d) + (T', d)
        causal = self.causal[:n, :n]
        for block in self.blocks:
            x = block(x, causal)
        return self.head(self.ln_f(x))  # (B, T', V)


@register_model("gpt", description="pre-norm causal transformer, char-level LM (tokens in)",
                input_kind="tokens", paper_exact=False, default_depth=4, default_width=128,
                default_heads=4, default_seq_len=64, default_tie_weights=False)
def gpt(*, in_channels: int, num_classes: int, image_size: int, depth: int, width: int,
        heads: int, seq_len: int, tie_weights: bool) -> GPT:
    """GPT of ``depth`` blocks (default 4), ``width`` 128, ``heads`` 4, context ``seq_len`` 64
    (nanoGPT's CPU setting); vocabulary ``num_classes``. ``in_channels``/``image_size`` ignored.
    """
    return GPT(GPTConfig(vocab_size=num_classes, seq_len=seq_len, depth=depth, width=width,
                         heads=heads, tie_weights=tie_weights))
