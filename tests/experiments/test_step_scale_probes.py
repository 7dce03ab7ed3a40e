"""The step-scale probes of docs/agd-stability.md §18: ``benchmarks/_gains.py``'s
``init_norm_ratios`` (AGD's σ read from the weights it is given) and
``benchmarks/_participation.py`` (G and L weighted by the tensors' terms of G)."""
from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import hyperfree

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _agd(model: nn.Module, x: torch.Tensor) -> hyperfree.AGD:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hyperfree.AGD(model, example=x)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 8, bias=False), nn.ReLU(),
                         nn.Linear(8, 3, bias=False))


X = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(1))


def test_init_norm_ratios_are_one_at_agds_init_and_follow_a_rescaled_matrix():
    gains = _load("_gains")
    model = _net()
    opt = _agd(model, X)
    opt.init_weights(torch.Generator().manual_seed(0))
    ratios = gains.init_norm_ratios(opt)
    assert set(ratios) == {id(p) for p in model.parameters()}  # the conv and both matrices
    assert all(r == pytest.approx(1.0, rel=1e-5) for r in ratios.values())
    with torch.no_grad():
        model[2].weight.mul_(3.0)
        model[0].weight[:, :, 1, 1].mul_(0.5)  # one kernel position of nine: the median stays
    ratios = gains.init_norm_ratios(opt)
    assert ratios[id(model[2].weight)] == pytest.approx(3.0, rel=1e-5)
    assert ratios[id(model[0].weight)] == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("mode", ["step", "both"])
def test_init_norm_on_first_step_scales_the_step_by_the_measured_norm(mode):
    """At the first step each group's gain becomes its ratio (a matrix at 3σ steps 3x as far);
    ``both`` also scales its gradient, so its term of G (and with it η) grows too."""
    gains = _load("_gains")
    runs = {}
    for how in ("plain", mode):
        model = _net().double()
        opt = hyperfree.AGD([{"params": [p]} for p in model.parameters()], model=model,
                            example=X.double())
        opt.init_weights(torch.Generator().manual_seed(0))
        with torch.no_grad():
            model[2].weight.mul_(3.0)
        ratios = gains.init_norm_on_first_step(opt, how) if how != "plain" else None
        before = [p.detach().clone() for p in model.parameters()]
        model(X.double()).square().mean().backward()
        opt.step()
        runs[how] = ([(p - b).norm().item() for p, b in zip(model.parameters(), before)],
                     float(opt.param_groups[0]["eta"]), ratios)
    (plain, eta0, _), (moved, eta1, ratios) = runs["plain"], runs[mode]
    assert ratios[id(model[2].weight)] == pytest.approx(3.0, rel=1e-6)
    # (to the retraction's second order: a longer step against the same weight shrinks less)
    if mode == "step":
        assert eta1 == pytest.approx(eta0, rel=1e-9)
        assert moved[1] == pytest.approx(3 * plain[1], rel=1e-2)
        assert moved[0] == pytest.approx(plain[0], rel=1e-6)  # the conv: at its σ
    else:
        assert eta1 > eta0 * 1.1
        assert moved[1] / plain[1] == pytest.approx(3 * eta1 / eta0, rel=1e-2)
        assert moved[0] / plain[0] == pytest.approx(eta1 / eta0, rel=1e-2)
    with pytest.raises(ValueError, match="one parameter per group"):
        gains.init_norm_on_first_step(hyperfree.AGD(_net()), "step")


def _step_factor(participation, model: nn.Module, scale: float | None = None) -> float:
    opt = _agd(model, X)
    opt.init_weights(torch.Generator().manual_seed(0))
    if scale is not None:  # the first matrix's gradient made small: an inactive tensor
        model[0].weight.register_hook(lambda g: g * scale)
    probe = participation.Participation(opt, "capped")
    ratio = participation.Participation(opt, "ratio")
    model(X).square().mean().backward()
    return probe(), ratio(), probe.ratios[-1], ratio.ratios[-1]


def test_participation_shortens_l_only_by_the_tensors_whose_terms_are_small():
    participation = _load("_participation")
    capped, ratio, l_capped, l_ratio = _step_factor(participation, _net())
    # three matrices with unequal terms: L' below L, the step longer, never shorter
    assert 0 < l_capped <= 1 and 0 < l_ratio <= 1 and capped >= 1 and ratio >= 1
    capped2, ratio2, l_capped2, l_ratio2 = _step_factor(participation, _net(), scale=1e-4)
    # the conv made inactive: it drops out of L' (its whole mass, 1 of 3), the step grows
    assert l_capped2 < min(l_capped, 2 / 3 + 1e-3) and l_ratio2 < min(l_ratio, 2 / 3 + 1e-3)
    assert math.isfinite(capped2) and capped2 > capped and math.isfinite(ratio2) and ratio2 > ratio


def test_participation_refuses_an_unknown_mode():
    participation = _load("_participation")
    with pytest.raises(ValueError, match="'median'"):
        participation.Participation(_agd(_net(), X), "median")


@pytest.mark.parametrize("encoder", [None, 0, 3])
def test_hf_forks_builds_t5_with_its_own_encoder_depth(encoder):
    """``--encoder-layers`` (0 included: the encoder is its embedding and final norm) sets the
    encoder's blocks, ``--layers`` the decoder's."""
    pytest.importorskip("transformers")
    model = _load("hf_forks").build("t5", 2, 10, encoder)
    assert len(model.encoder.block) == (2 if encoder is None else encoder)
    assert len(model.decoder.block) == 2
