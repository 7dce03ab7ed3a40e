"""The ``gpt`` model against an independent description of it.

* shapes: ``(B, T')`` int64 -> ``(B, T', V)`` for every ``T' <= seq_len``; one-line ValueErrors
  for ``T' > seq_len`` and ``width % heads != 0``;
* the forward pass equals a float64 re-implementation written here from the formulas (packed
  Q/K/V slices of ``in_proj_weight``, per-head softmax with the causal mask, GELU MLP,
  pre-norm residuals), in training and in eval mode (``nn.MultiheadAttention``'s fast path);
* causality: changing token ``t`` leaves the logits at positions ``< t`` unchanged;
* ``tie_weights``: one shared ``Parameter`` that gets both roles' gradients, ``V·d`` fewer
  parameters; the parameter count equals ``(2 - tie) V d + T d + depth (12 d² + 13 d) + 2 d``;
* the GPT-2 initialisation: std 0.02, residual projections 0.02 / sqrt(2 depth), zero biases.
Run: ``.venv/bin/python -m pytest -q tests/models/test_model_gpt.py``.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperfree.models import create_model
from hyperfree.models.gpt import GPT, GPTConfig, gpt_num_parameters


def _gpt(**kw: object) -> GPT:
    base = dict(vocab_size=11, seq_len=8, depth=2, width=12, heads=3)
    base.update(kw)
    return GPT(GPTConfig(**base))  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [1, 5, 8])
def test_forward_shapes(length: int) -> None:
    model = _gpt()
    out = model(torch.randint(0, 11, (4, length)))
    assert out.shape == (4, length, 11) and out.dtype == torch.float32


def test_too_long_input_and_bad_heads_are_value_errors() -> None:
    with pytest.raises(ValueError, match="sequence length 9 exceeds the context seq_len=8"):
        _gpt()(torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="width=12 is not divisible by heads=5"):
        _gpt(heads=5)
    with pytest.raises(ValueError, match="width=10 is not divisible by heads=4"):
        create_model("gpt", in_channels=0, num_classes=5, image_size=0, width=10, heads=4)


def _reference_logits(model: GPT, tokens: Tensor) -> Tensor:
    """The module docstring's formulas, transcribed with plain tensor ops in float64."""
    P = {k: v.detach().double() for k, v in model.named_parameters()}
    cfg = model.cfg
    d, h = cfg.width, cfg.heads
    hd = d // h
    B, T = tokens.shape
    x = P["tok_emb.weight"][tokens] + P["pos_emb.weight"][:T]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))

    def ln(v: Tensor, name: str) -> Tensor:
        mu = v.mean(-1, keepdim=True)
        var = v.var(-1, unbiased=False, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * P[name + ".weight"] + P[name + ".bias"]

    for i in range(cfg.depth):
        pre = f"blocks.{i}."
        a = ln(x, pre + "ln_1")
        W, b = P[pre + "attn.in_proj_weight"], P[pre + "attn.in_proj_bias"]
        q, k, v = (a @ W[j * d:(j + 1) * d].T + b[j * d:(j + 1) * d] for j in range(3))
        heads = []
        for j in range(h):
            sl = slice(j * hd, (j + 1) * hd)
            scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)  # (B, T, T)
            scores = scores.masked_fill(~allowed, float("-inf"))
            heads.append(torch.softmax(scores, -1) @ v[..., sl])
        att = torch.cat(heads, -1) @ P[pre + "attn.out_proj.weight"].T + P[pre + "attn.out_proj.bias"]
        x = x + att
        m = ln(x, pre + "ln_2")
        m = F.gelu(m @ P[pre + "mlp.0.weight"].T + P[pre + "mlp.0.bias"])
        x = x + m @ P[pre + "mlp.2.weight"].T + P[pre + "mlp.2.bias"]
    head = P["tok_emb.weight"] if cfg.tie_weights else P["head.weight"]
    return ln(x, "ln_f") @ head.T


@pytest.mark.parametrize("tie", [False, True])
def test_forward_matches_independent_formula(tie: bool) -> None:
    model = _gpt(tie_weights=tie)
    with torch.no_grad():  # random LayerNorm/bias values, so every term matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randint(0, 11, (3, 7))
    want = _reference_logits(model, tokens)
    torch.testing.assert_close(model(tokens).double(), want, rtol=1e-4, atol=1e-5)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("train_mode", [True, False])
def test_logits_before_t_do_not_depend_on_token_t(train_mode: bool) -> None:
    model = _gpt().train(train_mode)
    tokens = torch.randint(0, 11, (2, 8))
    for t in (0, 3, 7):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        with torch.no_grad():
            a, b = model(tokens), model(changed)
        assert torch.equal(a[:, :t], b[:, :t]), t
        assert not torch.allclose(a[:, t], b[:, t])  # the token itself does matter


def test_tied_weights_are_one_parameter_with_both_gradients() -> None:
    untied, tied = _gpt(), _gpt(tie_weights=True)
    assert tied.head.weight is tied.tok_emb.weight
    assert untied.head.weight is not untied.tok_emb.weight
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) - n(tied) == 11 * 12
    assert len(list(tied.parameters())) == len(list(untied.parameters())) - 1
    tokens = torch.randint(0, 11, (2, 8))
    tied(tokens).logsumexp(-1).sum().backward()
    # the embedding role alone gives gradient only to rows of tokens that occur; the head role
    # gives every row a gradient through logsumexp
    unused = sorted(set(range(11)) - set(tokens.flatten().tolist()))
    assert unused and tied.tok_emb.weight.grad[unused].abs().sum() > 0


@pytest.mark.parametrize("V,T,depth,d,heads,tie", [(65, 64, 4, 128, 4, False),
                                                   (65, 64, 4, 128, 4, True),
                                                   (7, 5, 1, 6, 2, False),
                                                   (30, 16, 3, 32, 8, True)])
def test_parameter_count_formula(V: int, T: int, depth: int, d: int, heads: int,
                                 tie: bool) -> None:
    with torch.device("meta"):
        model = create_model("gpt", in_channels=0, num_classes=V, image_size=0, depth=depth,
                             width=d, heads=heads, seq_len=T, tie_weights=tie)
    want = (1 if tie else 2) * V * d + T * d + depth * (12 * d * d + 13 * d) + 2 * d
    assert sum(p.numel() for p in model.parameters()) == want
    assert gpt_num_parameters(model.cfg) == want
    if (V, d, T, depth, tie) == (65, 128, 64, 4, False):
        assert want == 818_176  # nanoGPT's Shakespeare-char CPU size, counted by hand


def test_attention_is_multihead_attention_with_packed_projections() -> None:
    model = _gpt()
    for block in model.blocks:
        assert isinstance(block.attn, nn.MultiheadAttention)
        assert block.attn.in_proj_weight.shape == (36, 12)
        assert block.attn.in_proj_bias.shape == (36,)
        assert block.attn.out_proj.weight.shape == (12, 12)
        assert block.attn.out_proj.bias.shape == (12,)
        assert isinstance(block.ln_1, nn.LayerNorm) and block.ln_1.elementwise_affine


def test_gpt2_initialisation() -> None:
    torch.manual_seed(0)
    depth = 8
    model = _gpt(vocab_size=300, seq_len=256, depth=depth, width=256, heads=4)
    residual = 0.02 / math.sqrt(2 * depth)
    for name, p in model.named_parameters():
        if name.endswith(("out_proj.weight", "mlp.2.weight")):
            assert p.std().item() == pytest.approx(residual, rel=0.03), name
        elif name.startswith("ln") or ".ln_" in name:
            assert torch.equal(p, torch.ones_like(p) if name.endswith("weight")
                               else torch.zeros_like(p)), name
        elif p.dim() == 1:
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            assert p.std().item() == pytest.approx(0.02, rel=0.03), name
            assert abs(p.mean().item()) < 2e-3, name
