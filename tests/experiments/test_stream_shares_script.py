"""benchmarks/stream_shares.py: the measured share of a branch's relative change at the end of
its residual stream (the premise of docs/agd-stability.md §16)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import hyperfree
from hyperfree.models import create_model

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stream_shares.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("stream_shares", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gpt(depth: int):
    torch.manual_seed(0)
    model = create_model("gpt", in_channels=1, num_classes=11, image_size=8, depth=depth,
                         width=16, heads=2, seq_len=8)
    hyperfree.optim.init_weights(model, generator=torch.Generator().manual_seed(0))
    return model.double()


TOKENS = torch.randint(0, 11, (6, 9), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("direction", ["grad", "random"])
def test_the_last_branch_reaches_the_end_alone_and_earlier_ones_through_the_rest(script,
                                                                                 direction):
    """Nothing after the last branch can answer its change, so its share is its size in the
    stream (``alone``) to first order; every branch has one row, with positive shares, and the
    model and its gradients are left as they were."""
    model = _gpt(3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = script.branch_shares(model, TOKENS, eps=1e-6, direction=direction)
    assert [r["branch"] for r in rows] == ["0.attn", "0.mlp", "1.attn", "1.mlp", "2.attn",
                                           "2.mlp"]
    assert rows[-1]["share"] == pytest.approx(rows[-1]["alone"], rel=1e-4)
    assert all(r["share"] > 0 and 0 < r["alone"] < 1 for r in rows)
    assert rows[0]["share"] != pytest.approx(rows[0]["alone"], rel=1e-3)  # later blocks answer
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
        assert p.grad is None or not p.grad.any()


def test_an_unknown_direction_is_refused(script):
    with pytest.raises(ValueError, match="direction 'sideways'"):
        script.branch_shares(_gpt(1), TOKENS, direction="sideways")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="needs transformers: pip install 'hyperfree[ecosystem]'")
def test_a_hugging_face_llama_is_read_by_its_attention_and_mlp(script):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8)).double()
    rows = script.branch_shares(model, TOKENS, eps=1e-6)
    assert [r["branch"] for r in rows] == ["0.attn", "0.mlp", "1.attn", "1.mlp"]
    assert rows[-1]["share"] == pytest.approx(rows[-1]["alone"], rel=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="needs transformers: pip install 'hyperfree[ecosystem]'")
def test_a_t5_is_read_by_its_decoders_three_branches_per_block(script):
    """A T5 (``hf_forks.py``'s): the decoder's stream, self-attention, cross-attention and
    feed-forward per block; the batch's first half in, the second half out."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("hf_forks", SCRIPT.parent / "hf_forks.py")
        forks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(forks)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    torch.manual_seed(0)
    model = forks.build("t5", 2, 11, 1).double()
    tokens = torch.randint(1, 11, (4, 16), generator=torch.Generator().manual_seed(1))
    rows = script.branch_shares(model, tokens, eps=1e-6)
    assert [r["branch"] for r in rows] == ["0.self", "0.cross", "0.ff", "1.self", "1.cross",
                                           "1.ff"]
    assert rows[-1]["share"] == pytest.approx(rows[-1]["alone"], rel=1e-4)
    assert all(r["share"] > 0 for r in rows)
