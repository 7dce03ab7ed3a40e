"""The default preset, ``spectral-head``: one rule for every network, its pieces
(:class:`~hyperfree.optim.Rotation`, :class:`~hyperfree.optim.PolyAverage`; the estimate
:class:`~hyperfree.optim.Fading` has tests/optim/test_agd_fading.py) and the averaged
weights' ``eval()`` / ``train()`` (``docs/agd-stability.md`` §8).

Fast step == reference twin for the preset is proven registry-wide (test_agd_paths,
test_agd_speed, test_agd_generic); here: what the pieces promise, checked from their
definitions against a preset without them.
"""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import AUTO, DEFAULT_PRESET, PRESETS, PolyAverage, Rotation, get_preset


def _mlp(*middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8, bias=False), *middle, nn.ReLU(),
                         nn.Linear(8, 3, bias=False))


def _steps(model: nn.Module, opt: hyperfree.AGD, n: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 6, generator=g, dtype=torch.float64)
        y = torch.randn(16, 3, generator=g, dtype=torch.float64)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("model", [_mlp(), _mlp(nn.LayerNorm(8)), _mlp(nn.BatchNorm1d(8)),
                                   nn.LSTM(4, 5), nn.Sequential(nn.Embedding(10, 4),
                                                                nn.Linear(4, 10))],
                         ids=["mlp", "layernorm", "batchnorm", "lstm", "embedding"])
def test_every_network_gets_the_one_default(model: nn.Module) -> None:
    assert DEFAULT_PRESET == "spectral-head"
    assert hyperfree.AGD(model).preset is PRESETS[DEFAULT_PRESET]
    assert get_preset(AUTO) is get_preset("AUTO") is PRESETS[DEFAULT_PRESET]


def test_rotation_keeps_the_first_order_change_of_every_norm_squared() -> None:
    """One step from the same weights and gradients with and without the retraction: the
    retracted weight is the unretracted one W' rescaled, to ‖W'‖² − ‖Δ‖²(1 − ‖Δ‖²/‖W'‖²),
    i.e. ‖W‖² + 2⟨Δ, W⟩ up to ‖Δ‖⁴/‖W'‖²."""
    torch.manual_seed(0)
    model = _mlp().double()
    twin = copy.deepcopy(model)
    free = dataclasses.replace(PRESETS[DEFAULT_PRESET], name="free", retraction=None)
    opt, ref = hyperfree.AGD(model), hyperfree.AGD(twin, preset=free)
    before = [p.detach().clone() for p in model.parameters()]
    _steps(model, opt, 1)
    _steps(twin, ref, 1)
    for w0, w, w_free in zip(before, model.parameters(), twin.parameters()):
        delta = w_free - w0
        assert delta.norm() > 1e-3 * w0.norm()  # the step moved it
        d2, n2 = delta.square().sum(), w_free.square().sum()
        torch.testing.assert_close(w.square().sum(), n2 - d2 * (1 - d2 / n2), rtol=1e-12,
                                   atol=0)
        first_order = w0.square().sum() + 2 * (delta * w0).sum()
        assert abs(w.square().sum() - first_order) <= 1.01 * d2 ** 2 / n2
        scale = (w * w_free).sum() / w_free.square().sum()
        torch.testing.assert_close(w, scale * w_free, rtol=1e-12, atol=1e-15)
        assert scale < 1  # the ‖Δ‖² was taken out


def test_rotation_leaves_a_cell_as_moved_when_the_step_is_as_long_as_it() -> None:
    """A cell that started at zero (‖W'‖ = ‖Δ‖) moves freely, continuously in the rounding of
    ‖Δ‖²; the factor is never below √(3/4) (at ‖Δ‖²/‖W'‖² = 1/2)."""
    sq = torch.tensor([4.0, 1.0, 1.0 + 1e-15, 1.0 - 1e-15, 2.0, 0.0], dtype=torch.float64)
    delta_sq = torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    got = Rotation().factor(sq, torch.ones(6), delta_sq).tolist()
    assert got == pytest.approx([(1 - 0.25 * 0.75) ** 0.5, 1.0, 1.0, 1.0, 0.75 ** 0.5, 1.0])


def test_the_average_is_the_polynomial_decay_average_of_the_iterates() -> None:
    """x_k = x_{k-1} + (γ+1)/(k+γ) (W_k − x_{k-1}) over the iterates W_1..W_K, recomputed here
    from the weights after every step."""
    torch.manual_seed(0)
    model = _mlp().double()
    opt = hyperfree.AGD(model)
    gamma = opt.preset.average.gamma
    x = None
    for k in range(1, 8):
        _steps(model, opt, 1, seed=k)
        w = [p.detach().clone() for p in model.parameters()]
        c = (gamma + 1) / (k + gamma)
        x = w if x is None else [a + c * (b - a) for a, b in zip(x, w)]
    live = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    for p, a in zip(model.parameters(), x):
        torch.testing.assert_close(p.detach(), a, rtol=1e-13, atol=1e-15)
    opt.train()
    for p, w in zip(model.parameters(), live):
        assert torch.equal(p, w)  # bit-exact round trip


def test_step_refuses_while_the_model_holds_the_average_and_eval_is_idempotent() -> None:
    torch.manual_seed(0)
    model = _mlp().double()
    opt = hyperfree.AGD(model)
    before = [p.detach().clone() for p in model.parameters()]
    opt.eval()  # before any step: nothing to put in the model
    assert not opt._evaluating and all(torch.equal(a, b) for a, b in
                                       zip(before, model.parameters()))
    _steps(model, opt, 3)
    opt.eval()
    avg = [p.detach().clone() for p in model.parameters()]
    opt.eval()  # twice: still the average (no swap back)
    assert all(torch.equal(a, b) for a, b in zip(avg, model.parameters()))
    with pytest.raises(RuntimeError, match=r"call AGD.train\(\)"):
        _steps(model, opt, 1)
    opt.train()
    opt.train()
    _steps(model, opt, 1)


def test_averaged_context_and_resume_in_eval_mode_equals_never_stopping() -> None:
    torch.manual_seed(0)
    model = _mlp().double()
    later = copy.deepcopy(model)
    opt = hyperfree.AGD(model)
    _steps(model, opt, 3)
    with opt.averaged():
        saved = copy.deepcopy(opt.state_dict())
        weights = copy.deepcopy(model.state_dict())  # the average, as a checkpoint in eval
    resumed = hyperfree.AGD(later)
    later.load_state_dict(weights)
    resumed.load_state_dict(saved)
    assert resumed._evaluating
    resumed.train()
    for a, b in zip(later.parameters(), model.parameters()):
        assert torch.equal(a, b)
    _steps(model, opt, 2, seed=5)
    _steps(later, resumed, 2, seed=5)
    with opt.averaged(), resumed.averaged():
        for a, b in zip(later.parameters(), model.parameters()):
            assert torch.equal(a, b)


def test_a_skipped_step_is_not_averaged() -> None:
    torch.manual_seed(0)
    model = _mlp().double()
    opt = hyperfree.AGD(model)
    _steps(model, opt, 2)
    count = int(opt._pieces.fields["average"]["count"])
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    with pytest.warns(RuntimeWarning):
        opt.step()
    assert int(opt._pieces.fields["average"]["count"]) == count


def test_poly_average_rejects_a_bad_gamma() -> None:
    with pytest.raises(ValueError, match="gamma must be a number >= 0, got -1"):
        PolyAverage(-1)


def test_recalibrate_batchnorm_recomputes_statistics_at_the_current_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.0)).eval()
    data = [torch.randn(32, 4) * 3 + 1 for _ in range(5)]
    with pytest.raises(ValueError, match="got no batches"):
        hyperfree.optim.recalibrate_batchnorm(model, [])
    assert model[1].running_mean.abs().max() == 0  # untouched by the refusal
    n = hyperfree.optim.recalibrate_batchnorm(model, [(x, None) for x in data])
    assert n == 5 and not model.training and model[1].momentum == 0.1
    with torch.no_grad():
        h = model[0](torch.cat(data))
    torch.testing.assert_close(model[1].running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    assert hyperfree.optim.recalibrate_batchnorm(_mlp(), data) == 0  # no BatchNorm: not run
