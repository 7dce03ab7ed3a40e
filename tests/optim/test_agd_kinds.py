"""For every parameter kind, one AGD step equals the rule of ``docs/agd-rules.md``, written out.

Each case is a small float64 model that uses the kind; its rules (which kind every parameter
is, its cells, σ and mass) are stated here by hand from the doc's table, and the step is
computed by :mod:`tests.optim.agd_spec` (own slicing, own σ, own dual norms, own η, own literal
Newton–Schulz loop). Checked for both families (``paper`` = frobenius, ``spectral``) and both
code paths: ``opt.L`` (the mass accounting: bias 0, packed blocks B, conv 1, gain 1,
embedding 1, tied once), ``opt.eta`` and every parameter after the step, at 1e-10. A second
test checks that the spectral step is a polar factor (the singular vectors of the gradient,
singular values near 1) against an SVD, so the Newton–Schulz transcription cannot hide a
shared mistake. Run: ``pytest tests/optim/test_agd_kinds.py``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import hyperfree

from .reference import make_agd

from . import agd_spec as S

FAMILY = {"paper": "frobenius", "spectral": "spectral"}


@dataclasses.dataclass(frozen=True)
class Case:
    """A model using one kind, its input, its hand-written rules and its expected ``L``."""

    name: str
    build: Callable[[], nn.Module]
    run: Callable[[nn.Module], torch.Tensor]
    rules: Callable[[nn.Module, str], dict[str, S.Rule]]
    L: int


def _x(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def _plain(name, build, x_shape, L):
    return Case(name, build, lambda m: m(_x(*x_shape)), S.hand_rules, L)


class Tied(nn.Module):
    """Embedding -> Linear -> head tied to the embedding (one Parameter, two owners)."""

    def __init__(self, V: int = 10, d: int = 6):
        super().__init__()
        self.embed = nn.Embedding(V, d)
        self.mid = nn.Linear(d, d)
        self.head = nn.Linear(d, V, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.mid(self.embed(ids))))


def _ids(V=10, shape=(2, 5)):
    ids = torch.randint(2, V - 3, shape)  # rows V-3.. never used: they must not move
    ids[0, 0] = 0
    return ids


def _mha_run(m):
    x = _x(2, 4, 6)
    return m(x, x, x, need_weights=False)[0]


def _mha_rules(m, family):
    return S.hand_rules(m, family, {"in_proj_weight": S.linear(m.in_proj_weight.shape, 3),
                                      "in_proj_bias": S.bias(m.in_proj_bias.shape, 3)})


def _mha_kv_run(m):
    return m(_x(2, 4, 6), _x(2, 3, 5), _x(2, 3, 3), need_weights=False)[0]


def _mha_kv_rules(m, family):
    return S.hand_rules(m, family, {
        "q_proj_weight": S.linear((6, 6)), "k_proj_weight": S.linear((6, 5)),
        "v_proj_weight": S.linear((6, 3)), "in_proj_bias": S.bias((18,), 3),
        "bias_k": S.bias((1, 1, 6)), "bias_v": S.bias((1, 1, 6))})


def _rnn_rules(gates: int):
    def rules(m, family):
        out = {}
        for name, p in m.named_parameters():
            if name.startswith("weight_hr"):
                out[name] = S.linear(p.shape)
            elif name.startswith("weight"):  # W_ih and W_hh: one layer, half its mass each
                out[name] = S.linear(p.shape, gates, share=2)
            else:
                out[name] = S.bias(p.shape, gates)
        return out
    return rules


def _rnn_run(m):
    return m(_x(3, 2, 4))[0]


def _tied_rules(m, family):
    return {"embed.weight": S.embedding((10, 6), family), "mid.weight": S.linear((6, 6)),
            "mid.bias": S.bias((6,))}


CASES = [
    _plain("linear", lambda: nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)),
           (4, 5), 2),
    _plain("conv1d", lambda: nn.Sequential(nn.Conv1d(3, 5, 3), nn.Tanh(), nn.Conv1d(5, 2, 2)),
           (2, 3, 8), 2),
    _plain("conv2d", lambda: nn.Conv2d(3, 4, (2, 3)), (2, 3, 5, 6), 1),
    _plain("conv3d", lambda: nn.Conv3d(2, 3, 2), (2, 2, 3, 3, 3), 1),
    _plain("conv2d_groups", lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 5, 5), 1),
    _plain("conv_transpose1d", lambda: nn.ConvTranspose1d(3, 5, 3), (2, 3, 6), 1),
    _plain("conv_transpose2d", lambda: nn.ConvTranspose2d(2, 6, 2), (2, 2, 3, 3), 1),
    _plain("conv_transpose3d", lambda: nn.ConvTranspose3d(2, 3, 2), (1, 2, 2, 2, 2), 1),
    _plain("conv_transpose2d_groups", lambda: nn.ConvTranspose2d(4, 6, 2, groups=2),
           (2, 4, 3, 3), 1),
    _plain("hf_conv1d", lambda: nn.Sequential(S.HFConv1D(12, 3), nn.Tanh(), S.HFConv1D(2, 12)),
           (4, 3), 2),
    Case("embedding", lambda: nn.Sequential(nn.Embedding(10, 4, padding_idx=0),
                                            nn.Linear(4, 3)),
         lambda m: m(_ids()), S.hand_rules, 2),
    Case("embedding_bag", lambda: nn.Sequential(nn.EmbeddingBag(10, 4, mode="sum",
                                                                padding_idx=0),
                                                nn.Linear(4, 3)),
         lambda m: m(_ids(shape=(3, 4))), S.hand_rules, 2),
    _plain("layernorm", lambda: nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(),
                                              nn.Linear(6, 3)), (4, 5), 3),
    _plain("rmsnorm", lambda: nn.Sequential(nn.Linear(5, 6), nn.RMSNorm(6), nn.Linear(6, 3)),
           (4, 5), 3),
    _plain("batchnorm1d", lambda: nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6),
                                                nn.Tanh(), nn.Linear(6, 3)), (8, 5), 3),
    _plain("batchnorm2d", lambda: nn.Sequential(nn.Conv2d(2, 3, 3, bias=False),
                                                nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                                                nn.Linear(27, 2)), (4, 2, 5, 5), 3),
    _plain("groupnorm", lambda: nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.GroupNorm(2, 4),
                                              nn.Tanh(), nn.Flatten(), nn.Linear(36, 2)),
           (4, 2, 5, 5), 3),
    _plain("instancenorm2d", lambda: nn.Sequential(nn.Conv2d(2, 3, 3, bias=False),
                                                   nn.InstanceNorm2d(3, affine=True), nn.Tanh(),
                                                   nn.Flatten(), nn.Linear(27, 2)),
           (4, 2, 5, 5), 3),
    Case("mha", lambda: nn.MultiheadAttention(6, 2, batch_first=True), _mha_run, _mha_rules, 4),
    Case("mha_kdim_vdim", lambda: nn.MultiheadAttention(6, 2, kdim=5, vdim=3, add_bias_kv=True,
                                                        batch_first=True),
         _mha_kv_run, _mha_kv_rules, 4),
    Case("rnn", lambda: nn.RNN(4, 5), _rnn_run, _rnn_rules(1), 1),
    Case("lstm", lambda: nn.LSTM(4, 5, num_layers=2, bidirectional=True), _rnn_run,
         _rnn_rules(4), 2 * 2 * 4),
    Case("lstm_proj", lambda: nn.LSTM(4, 5, proj_size=3), _rnn_run, _rnn_rules(4), 2 + 2 + 1),
    Case("gru", lambda: nn.GRU(4, 5), _rnn_run, _rnn_rules(3), 3),
    Case("tied", Tied, lambda m: m(_ids()), _tied_rules, 2),
]


def _loss(out: torch.Tensor) -> torch.Tensor:
    target = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(9))
    return ((out - target) ** 2).sum()


def _build(case: Case) -> nn.Module:
    torch.manual_seed(0)
    model = case.build().double()
    with torch.no_grad():  # gains and biases away from their init, so their moves are visible
        for name, p in model.named_parameters():
            if p.dim() == 1 or name.startswith("bias_"):
                p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(1)
    _loss(case.run(model)).backward()
    return model


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("preset", ["paper", "spectral"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_step_equals_documented_rule(case, preset, path):
    model = _build(case)
    params = dict(model.named_parameters())
    rules = case.rules(model, FAMILY[preset])
    expected = S.spec_step(params, rules, FAMILY[preset])
    assert expected.L == case.L  # the hand rules themselves agree with the stated mass
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = make_agd(model, preset=preset, path=path)
    opt.step()
    assert opt.L == case.L
    assert math.isclose(float(opt.eta), expected.eta, rel_tol=1e-10), (float(opt.eta),
                                                                        expected.eta)
    S.assert_step_equals(params, expected)
    for name, p in params.items():  # the check is not vacuous: every parameter with a
        if p.grad.abs().max() > 1e-12:  # gradient moved by a visible amount
            assert (p - before[name]).abs().max() > 1e-6, name


@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_embedding_rows_without_gradient_stay(preset):
    case = next(c for c in CASES if c.name == "embedding")
    model = _build(case)
    table = model[0].weight
    before = table.detach().clone()
    hyperfree.AGD(model, preset=preset).step()
    moved = (table - before).abs().amax(dim=1) > 0
    used = table.grad.abs().amax(dim=1) > 0
    assert torch.equal(moved, used)
    assert not moved[0] and not moved[-3:].any() and moved.sum() >= 3  # padding, unused rows


@pytest.mark.parametrize("shape", [(4, 7), (7, 4), (5, 5)])
def test_spectral_step_is_a_polar_factor_of_the_gradient(shape):
    """The spectral direction of a Linear weight has the gradient's singular vectors (SVD) and
    singular values within Newton–Schulz's documented band; ⟨∇, D⟩ estimates ‖∇‖_*."""
    torch.manual_seed(3)
    layer = nn.Linear(shape[1], shape[0], bias=False).double()
    layer.weight.grad = torch.randn(shape, dtype=torch.float64)
    w0 = layer.weight.detach().clone()
    opt = hyperfree.AGD(layer, preset="spectral")
    opt.step()
    sigma = math.sqrt(shape[0] / shape[1])
    D = -(layer.weight.detach() - w0) / (float(opt.eta) * sigma)  # L = 1
    u, s, vh = torch.linalg.svd(layer.weight.grad, full_matrices=False)
    core = u.T @ D @ vh.T  # diagonal iff D shares the gradient's singular vectors
    diag = torch.diagonal(core)
    torch.testing.assert_close(core, torch.diag(diag), atol=1e-10, rtol=0)
    assert bool(((diag > 0.6) & (diag < 1.25)).all()), diag
    nuclear = float(s.sum())
    dual = float((layer.weight.grad * D).sum())
    assert 0.6 * nuclear < dual < 1.25 * nuclear
    G = sigma * dual
    assert math.isclose(float(opt.eta), math.log((1 + math.sqrt(1 + 4 * G)) / 2),
                        rel_tol=1e-10)
    torch.testing.assert_close(D, S.ns_polar(layer.weight.grad), rtol=1e-10, atol=1e-12)
    assert float((D - S.svd_polar(layer.weight.grad)).norm()) < 0.5 * math.sqrt(min(shape))


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_zero_cells_stay_put_and_gain_scales_every_move(preset, path):
    """Cells with an exactly zero gradient (a conv slice, a packed K block, a packed bias block,
    a whole gain) do not move; every other cell moves by gain·(η/L)·σ (gain = 2.5)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"conv": nn.Conv2d(2, 3, 2), "mha": nn.MultiheadAttention(4, 2),
                           "ln": nn.LayerNorm(4)}).double()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    model["conv"].weight.grad[:, :, 0, 1] = 0
    model["mha"].in_proj_weight.grad[4:8] = 0
    model["mha"].in_proj_bias.grad[8:] = 0
    model["ln"].weight.grad.zero_()
    params = dict(model.named_parameters())
    rules = S.hand_rules(model, FAMILY[preset])
    expected = S.spec_step(params, rules, FAMILY[preset], gain=2.5)
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = make_agd(model, preset=preset, path=path, gain=2.5)
    opt.step()
    assert opt.L == expected.L == 1 + 3 + 1 + 1
    assert math.isclose(float(opt.eta), expected.eta, rel_tol=1e-10)
    S.assert_step_equals(params, expected)
    assert torch.equal(params["conv.weight"][:, :, 0, 1], before["conv.weight"][:, :, 0, 1])
    assert torch.equal(params["mha.in_proj_weight"][4:8], before["mha.in_proj_weight"][4:8])
    assert torch.equal(params["mha.in_proj_bias"][8:], before["mha.in_proj_bias"][8:])
    assert torch.equal(params["ln.weight"], before["ln.weight"])
    moved = params["mha.in_proj_weight"].detach()[:4] - before["mha.in_proj_weight"][:4]
    if preset == "paper":  # the Q block: exactly 2.5·(η/L)·σ, σ = √(4/4), in Frobenius norm
        assert math.isclose(float(moved.norm()), 2.5 * expected.eta / 6, rel_tol=1e-10)


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("preset", ["paper", "spectral"])
def test_declared_packed_in_out_matrix_like_gpt2_c_attn(preset, path):
    """GPT-2's ``c_attn`` is an HF Conv1D holding Q, K, V side by side, ``(d, 3d)``; its owner
    type cannot tell, so it is declared ``Kind("linear_in_out", blocks=3)``: three
    ``(d_in, d)`` column blocks, each transposed, σ = √(d/d_in), mass 3."""
    from hyperfree.optim import Kind

    torch.manual_seed(0)
    model = nn.ModuleDict({"c_attn": S.HFConv1D(3 * 4, 5)}).double()  # weight (5, 12)
    model["c_attn"].weight.grad = torch.randn(5, 12, dtype=torch.float64)
    model["c_attn"].weight.grad[:, :4] *= 1e3  # Q's gradient dwarfs K's and V's
    model["c_attn"].bias.grad = torch.randn(12, dtype=torch.float64)
    cells = tuple(((slice(None), slice(4 * b, 4 * (b + 1))), True) for b in range(3))
    rules = {"c_attn.weight": S.Rule(cells, math.sqrt(4 / 5), 3, "matrix"),
             "c_attn.bias": S.bias((12,), 3)}
    params = dict(model.named_parameters())
    expected = S.spec_step(params, rules, FAMILY[preset])
    opt = make_agd(model, preset=preset, path=path,
                        kinds={"c_attn.weight": Kind("linear_in_out", blocks=3),
                               "c_attn.bias": Kind("bias", blocks=3)})
    opt.step()
    assert opt.L == 3
    assert math.isclose(float(opt.eta), expected.eta, rel_tol=1e-10)
    S.assert_step_equals(params, expected)


def test_only_zero_mass_parameters_is_refused_at_construction():
    layer = nn.Linear(4, 3).double()
    layer.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="L"):
        hyperfree.AGD(layer)
