"""``benchmarks/head_scale.py``: the output layer's scale where a benchmark's training starts.

The reading is exact on a model whose numbers are known by hand; on the race's models it tells
the LSTM (hidden state near 0 at AGD's initialisation) from the GPT (LayerNorm before the head);
bad input is refused by name.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def hs(load_benchmark):
    return load_benchmark("head_scale")


def test_the_reading_is_exact_on_a_hand_model(hs):
    emb, head = nn.Embedding(5, 4), nn.Linear(4, 6, bias=False)
    with torch.no_grad():
        emb.weight.fill_(2.0)
        head.weight.zero_()
        head.weight[:4].copy_(3.0 * torch.eye(4))  # logits (6, 6, 6, 6, 0, 0)
    r = hs.head_scale(nn.Sequential(emb, head), head, torch.tensor([[0, 3, 4]]))
    assert r["in_rms"] == pytest.approx(2.0)
    assert r["logit_rms"] == pytest.approx(math.sqrt(4 * 36 / 6))
    assert r["op"] == pytest.approx(3.0)
    assert r["sigma"] == pytest.approx(math.sqrt(6 / 4))


def test_a_head_the_forward_never_calls_is_refused(hs):
    with pytest.raises(ValueError, match="not called"):
        hs.head_scale(nn.Embedding(5, 4), nn.Linear(4, 6), torch.tensor([[0, 1]]))


def test_the_race_lstm_starts_with_far_smaller_logits_than_the_gpt(hs):
    lstm, gpt = hs.measure("lstm", vocab=65), hs.measure("gpt", vocab=65)
    # at AGD's initialisation both heads sit at their target; the LSTM's input does not
    assert lstm["op"] == pytest.approx(lstm["sigma"], rel=1e-3)
    assert lstm["sigma"] == pytest.approx(math.sqrt(65 / 256))
    assert gpt["op"] == pytest.approx(gpt["sigma"], rel=1e-3)
    assert gpt["in_rms"] == pytest.approx(1.0, rel=1e-3)  # the final LayerNorm's output
    assert lstm["in_rms"] < 0.2 and lstm["logit_rms"] < gpt["logit_rms"] / 10


def test_bad_input_is_refused_by_name(hs, capsys):
    with pytest.raises(ValueError, match="'nope'"):
        hs.measure("nope")
    for argv, name in ((["--models", "lstm,nope"], "nope"), (["--models", ","], "empty"),
                       (["--vocab", "1"], "--vocab 1")):
        with pytest.raises(SystemExit):
            hs.parse_args(argv)
        assert name in capsys.readouterr().err
