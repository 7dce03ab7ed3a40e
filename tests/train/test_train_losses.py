"""Loss functions against independent formulas: the paper's square loss (one-hot·sqrt(C), mean
over batch AND classes, SPEC §1.2), cross-entropy (logsumexp − f_y), token flattening, hits."""
from __future__ import annotations

import math

import pytest
import torch

from hyperfree.train.losses import correct_count, cross_entropy, get_loss, square_loss


def _square_loop(f: torch.Tensor, y: torch.Tensor) -> float:
    B, C = f.shape
    total = 0.0
    for b in range(B):
        for c in range(C):
            t = math.sqrt(C) if c == int(y[b]) else 0.0
            total += (float(f[b, c]) - t) ** 2
    return total / (B * C)


def _xent_loop(f: torch.Tensor, y: torch.Tensor) -> float:
    total = 0.0
    for b in range(f.shape[0]):
        row = [float(v) for v in f[b]]
        m = max(row)
        total += m + math.log(sum(math.exp(v - m) for v in row)) - row[int(y[b])]
    return total / f.shape[0]


def test_square_loss_matches_loop_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=gen)
    assert square_loss(f, y).item() == pytest.approx(_square_loop(f, y), rel=1e-12)


def test_square_loss_is_zero_at_scaled_one_hot() -> None:
    y = torch.tensor([0, 2, 1])
    f = torch.nn.functional.one_hot(y, 3).double() * math.sqrt(3)
    assert square_loss(f, y).item() == pytest.approx(0.0, abs=1e-15)
    assert square_loss(f / math.sqrt(3), y).item() > 0.1  # unscaled one-hot is not the target


def test_cross_entropy_matches_logsumexp_formula() -> None:
    gen = torch.Generator().manual_seed(2)
    f = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 4, (6,), generator=gen)
    assert cross_entropy(f, y).item() == pytest.approx(_xent_loop(f, y), rel=1e-12)


@pytest.mark.parametrize("name", ["mse", "xent"])
def test_token_outputs_are_flattened(name: str) -> None:
    gen = torch.Generator().manual_seed(3)
    f = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 3), generator=gen)
    flat = get_loss(name)(f.reshape(6, 5), y.reshape(6))
    assert get_loss(name)(f, y).item() == pytest.approx(flat.item(), rel=1e-12)


def test_correct_count_counts_argmax_hits() -> None:
    f = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert int(correct_count(f, torch.tensor([1, 1, 1]))) == 2
    assert int(correct_count(f[None], torch.tensor([[1, 0, 1]]))) == 3


def test_unknown_loss_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        get_loss("l1")
