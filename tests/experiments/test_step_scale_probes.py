"""The step-scale probes of docs/agd-stability.md §18: ``benchmarks/_gains.py``'s
``init_norm_ratios`` (AGD's σ read from the weights it is given) and
``benchmarks/_participation.py`` (G and L weighted by the tensors' terms of G)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import hyperfree


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


def test_init_norm_ratios_are_one_at_agds_init_and_follow_a_rescaled_matrix(load_benchmark):
    gains = load_benchmark("_gains")
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
def test_init_norm_on_first_step_scales_the_step_by_the_measured_norm(mode, load_benchmark):
    """At the first step each group's gain becomes its ratio (a matrix at 3σ steps 3x as far);
    ``both`` also scales its gradient, so its term of G (and with it η) grows too."""
    gains = load_benchmark("_gains")
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


def test_participation_shortens_l_only_by_the_tensors_whose_terms_are_small(load_benchmark):
    participation = load_benchmark("_participation")
    capped, ratio, l_capped, l_ratio = _step_factor(participation, _net())
    # three matrices with unequal terms: L' below L, the step longer, never shorter
    assert 0 < l_capped <= 1 and 0 < l_ratio <= 1 and capped >= 1 and ratio >= 1
    capped2, ratio2, l_capped2, l_ratio2 = _step_factor(participation, _net(), scale=1e-4)
    # the conv made inactive: it drops out of L' (its whole mass, 1 of 3), the step grows
    assert l_capped2 < min(l_capped, 2 / 3 + 1e-3) and l_ratio2 < min(l_ratio, 2 / 3 + 1e-3)
    assert math.isfinite(capped2) and capped2 > capped and math.isfinite(ratio2) and ratio2 > ratio


def test_participation_refuses_an_unknown_mode(load_benchmark):
    participation = load_benchmark("_participation")
    with pytest.raises(ValueError, match="'median'"):
        participation.Participation(_agd(_net(), X), "median")


@pytest.mark.parametrize("encoder", [None, 0, 3])
def test_hf_forks_builds_t5_with_its_own_encoder_depth(encoder, load_benchmark):
    """``--encoder-layers`` (0 included: the encoder is its embedding and final norm) sets the
    encoder's blocks, ``--layers`` the decoder's."""
    pytest.importorskip("transformers")
    model = load_benchmark("hf_forks").build("t5", 2, 10, encoder)
    assert len(model.encoder.block) == (2 if encoder is None else encoder)
    assert len(model.decoder.block) == 2


def test_hf_forks_t5_changes_each_change_the_part_they_name(load_benchmark):
    """``--t5-change`` (§19): each change moves the forward it names and only when asked; the
    untied head stays its own tensor after a training step, the frozen bias stays zero."""
    pytest.importorskip("transformers")
    forks = load_benchmark("hf_forks")
    x = torch.randint(1, 10, (2, 8))
    batch = {"input_ids": x, "labels": x}

    def logits(changes):
        torch.manual_seed(0)
        m = forks.build("t5", 1, 10, 0, changes)
        return m, m(**batch).logits

    base = logits(())[1]
    for change in forks.T5_CHANGES:
        if change != "untied-head":  # a copy of the embedding: the same function at init
            assert not torch.allclose(logits((change,))[1], base), change
    m, out = logits(("unscaled-head",))
    assert torch.allclose(out, base * 64 ** 0.5, rtol=1e-4, atol=1e-5)
    m, out = logits(("untied-head", "no-rel-bias"))
    assert m.lm_head.weight is not m.shared.weight
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m(**batch).loss.backward()
    opt.step()
    assert not torch.equal(m.lm_head.weight, m.shared.weight)
    bias = m.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert not bias.requires_grad and not bias.any()
    with pytest.raises(ValueError, match="'?swiglu'?"):
        forks.build("t5", 1, 10, 0, ("swiglu",))


@pytest.mark.parametrize("lr, grows", [(0.02, True), (3.0, False)])
def test_hypergain_lengthens_a_short_step_and_shortens_an_oscillating_one(lr, grows,
                                                                           load_benchmark):
    """``benchmarks/_hypergain.py`` (§19): on a quadratic, gradient descent with a step far
    below 1/λ keeps moving the same way (cosine −1: s grows), one beyond 1/λ oscillates
    (cosine +1: s falls); the groups' lr follows s."""
    hypergain = load_benchmark("_hypergain")
    w = nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = torch.optim.SGD([w], lr=lr)
    probe = hypergain.HyperGain(opt, kappa=0.1)
    base = opt.step
    probe.attach()
    for _ in range(10):
        opt.zero_grad()
        (0.5 * w.square().sum()).backward()
        opt.step()
    assert opt.step is not base and len(probe.cosines) == 9
    assert all(h < -0.99 for h in probe.cosines) if grows else all(
        h > 0.99 for h in probe.cosines)
    assert (probe.scales[-1] > 1.5) if grows else (probe.scales[-1] < 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * probe.scales[-1])


def test_hypergain_average_reference_reads_the_offset_from_agds_average(load_benchmark):
    """``reference="average"``: the direction is the iterate's offset from AGD's averaged
    weights, so no cosine while the average is the iterate, and the cosine is exactly
    ⟨g, θ − θ̄⟩/(‖g‖‖θ − θ̄‖) after."""
    hypergain = load_benchmark("_hypergain")
    model = _net()
    opt = _agd(model, X)
    probe = hypergain.HyperGain(opt, kappa=0.1, reference="average").attach()
    for _ in range(3):
        opt.zero_grad()
        model(X).square().mean().backward()
        expect = None
        if any("average" in opt.state.get(p, {}) for p in model.parameters()):
            g = torch.cat([p.grad.flatten() for p in model.parameters()])
            u = torch.cat([(p.detach() - opt.state[p]["average"]).flatten()
                           for p in model.parameters()])
            if u.norm() > 0:  # after one step the average is the iterate
                expect = float(g @ u / (g.norm() * u.norm()))
        opt.step()
        if expect is not None:
            assert probe.cosines[-1] == pytest.approx(expect, rel=1e-4)
    assert len(probe.cosines) >= 1
    with pytest.raises(ValueError, match="'median'"):
        hypergain.HyperGain(opt, kappa=0.1, reference="median")
    with pytest.raises(ValueError, match="kappa -1"):
        hypergain.HyperGain(opt, kappa=-1)


def test_linefit_reads_the_line_minimum_of_a_quadratic_and_keeps_buffers(load_benchmark):
    """``benchmarks/_linefit.py`` (§19): gradient descent with step α on ½λ‖w‖² has ρ = 1 − αλ/2
    and s* = 1/(αλ) exactly; the extra forward's BatchNorm statistics are put back."""
    linefit = load_benchmark("_linefit")
    lam, alpha = 2.0, 0.1
    model = nn.BatchNorm1d(3)
    w = nn.Parameter(torch.tensor([3.0, -2.0, 1.0]))
    opt = torch.optim.SGD([w], lr=alpha)
    fit = linefit.LineFit([w], model)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        opt.zero_grad()
        loss = 0.5 * lam * w.square().sum()
        loss.backward()
        fit.before()
        opt.step()
        kept = model.running_mean.clone()
        fit.after(float(loss.detach()), lambda: (model(x), 0.5 * lam * w.square().sum())[1])
        assert torch.equal(model.running_mean, kept)
    assert fit.rho == pytest.approx([1 - alpha * lam / 2] * 3, rel=1e-5)
    assert fit.scale == pytest.approx([1 / (alpha * lam)] * 3, rel=1e-4)
    assert fit.quarters()[0] == pytest.approx(0.9, abs=1e-3)


def test_linefit_coherence_is_one_for_a_repeated_gradient_and_minus_one_when_it_flips(
        load_benchmark):
    linefit = load_benchmark("_linefit")
    w = nn.Parameter(torch.ones(3))
    fit = linefit.LineFit([w], nn.Identity())
    for sign in (1.0, 1.0, -1.0):
        w.grad = sign * torch.tensor([1.0, 2.0, 3.0])
        fit.before()
    assert fit.coherence == pytest.approx([1.0, -1.0])


def test_probe_arguments_are_one_definition_and_refuse_two_setters_of_one_thing(load_benchmark):
    """``benchmarks/_probe_args.py``: a script gets the options it names; two options that set
    the same thing (the gains, or the groups' lr, the script's own included) are refused."""
    import argparse
    probe_args = load_benchmark("_probe_args")
    ap = argparse.ArgumentParser()
    probe_args.add_probe_arguments(ap, ("init-norm", "linefit"))
    args = ap.parse_args(["--init-norm", "both", "--linefit"])
    assert args.init_norm == "both" and args.linefit and not hasattr(args, "hypergain")
    with pytest.raises(ValueError, match="swiglu"):
        probe_args.add_probe_arguments(argparse.ArgumentParser(), ("swiglu",))
    full = argparse.ArgumentParser()
    probe_args.add_probe_arguments(full)
    probe_args.check_probe_arguments(full, full.parse_args(["--init-norm", "step",
                                                            "--hypergain", "0.1"]))
    for argv, own in ((["--hypergain", "0.1", "--participation", "capped"], {}),
                      (["--param-gain", "a=2", "--init-norm", "both"], {}),
                      (["--hypergain", "0.1"], {"lrs": (("--schedule", True),)})):
        with pytest.raises(SystemExit):
            probe_args.check_probe_arguments(full, full.parse_args(argv), **own)


def test_quarter_medians_take_each_quarter_and_pad_a_short_series(load_benchmark):
    quarters = load_benchmark("_quarters")
    assert quarters.quarter_medians([1, 2, 3, 4, 5, 6, 7, 8]) == [1.5, 3.5, 5.5, 7.5]
    assert quarters.quarter_medians([2.0], [], digits=1) == [2.0] * 4 + [0.0] * 4
