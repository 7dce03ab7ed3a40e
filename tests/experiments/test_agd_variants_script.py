"""benchmarks/agd_variants.py: with no option it runs exactly the default preset, and each
option changes only the piece it names (the probes of docs/agd-stability.md §11 compare
against the default, so a stale default in the script would compare against something else)."""
from __future__ import annotations

import dataclasses
import math
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import hyperfree
from hyperfree.models import create_model
from hyperfree.optim import DEFAULT_PRESET, PRESETS
from hyperfree.optim.pieces import Gradient, Momentum, PolyAverage, SelfEstimate, Sphere

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "agd_variants.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("agd_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _fields(preset):
    return {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)
            if f.name not in ("name",)}


def test_no_option_is_the_default_preset(script):
    got = script.variant_preset(script.parse_args(["conv"]))
    assert _fields(got) == _fields(PRESETS[DEFAULT_PRESET])


@pytest.mark.parametrize("argv, field, value", [
    (["--momentum", "0"], "source", Gradient()),
    (["--momentum", "0.5"], "source", Momentum(0.5)),
    (["--gamma", "4"], "average", PolyAverage(4.0)),
    (["--retraction", "sphere"], "retraction", Sphere()),
    (["--retraction", "none"], "retraction", None),
    (["--streams", "off"], "streams", False),
    (["--forks", "none"], "forks", False),
    (["--estimate", "self"], "estimate", SelfEstimate()),
    (["--head", "on"], "head", True),
    (["--rows", "lazy"], "lazy_rows", True),
])
def test_an_option_changes_only_its_piece(script, argv, field, value):
    got = _fields(script.variant_preset(script.parse_args(["gpt", *argv])))
    want = _fields(PRESETS[DEFAULT_PRESET])
    assert got.pop(field) == value
    want.pop(field)
    assert got == want


@pytest.mark.parametrize("estimate, preset", [("self", "spectral-average"),
                                              ("fading", "spectral-fading"),
                                              ("damped", "spectral-damped")])
def test_each_estimate_runs_its_presets_pieces(script, estimate, preset):
    """``--estimate self --head off`` runs exactly ``spectral-average``'s pieces (the "before"
    column of docs/agd-stability.md §22), ``fading`` ``spectral-fading``'s (§22's rule, the
    "before" column of §23) and ``damped`` ``spectral-damped``'s (the default until §25)."""
    got = script.variant_preset(script.parse_args(["gpt", "--estimate", estimate,
                                                   "--head", "off"]))
    assert got.definition == PRESETS[preset].definition  # every piece, no words
    with_head = script.variant_preset(script.parse_args(["gpt", "--estimate", estimate]))
    assert with_head.definition == {**got.definition, "head": "True"}


@pytest.mark.parametrize("argv, preset", [([], "spectral-head"), (["--head", "on"],
                                                                   "spectral-head"),
                                          (["--head", "off"], "spectral-damped")])
def test_head_runs_the_default_or_the_one_before(script, argv, preset):
    """No option and ``--head on`` are the default, ``spectral-head`` (docs/agd-stability.md
    §25's "ᴸ" rows); ``--head off`` is ``spectral-damped``, the default until §25."""
    assert DEFAULT_PRESET == "spectral-head"
    got = script.variant_preset(script.parse_args(["lstm", *argv]))
    assert got.definition == PRESETS[preset].definition


def test_lazy_rows_run_spectral_lazy(script):
    got = script.variant_preset(script.parse_args(["lstm", "--rows", "lazy"]))
    assert got.definition == PRESETS["spectral-lazy"].definition


def test_bad_momentum_is_refused(script):
    with pytest.raises(SystemExit, match="--momentum"):
        script.parse_args(["gpt", "--momentum", "1.0"])


def test_invariant_parameters_are_the_convs_batchnorm_follows(script):
    """Measured, not declared: in the race's pre-activation ResNet only each block's conv1
    (conv1 -> bn2) is scale-invariant row by row; an MLP has none."""
    torch.manual_seed(0)
    net = create_model("resnet_small", in_channels=1, num_classes=10, image_size=28, depth=1,
                       width=8)
    names = {id(p): n for n, p in net.named_parameters()}
    found = script.invariant_parameters(net, torch.randn(8, 1, 28, 28))
    assert sorted(names[id(p)] for p in found) == [
        f"stages.{i}.0.conv1.weight" for i in range(3)]
    assert all(p.grad is None for p in net.parameters())  # leaves no gradient behind
    vgg = create_model("vgg11", in_channels=1, num_classes=10, image_size=28, width=16)
    found = {id(p) for p in script.invariant_parameters(vgg, torch.randn(16, 1, 28, 28))}
    assert [n for n, p in vgg.named_parameters() if p.ndim > 1 and id(p) not in found] == [
        "classifier.weight"]  # every conv is followed by BatchNorm, the head is not
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    assert script.invariant_parameters(mlp, torch.randn(8, 1, 28, 28)) == []


def test_steps_is_refused_on_an_epoch_workload(script, tmp_path):
    with pytest.raises(ValueError, match=r"--steps 100: conv runs for epochs"):
        script.run("conv", 0, script.parse_args(["conv", "--steps", "100"]), tmp_path)


def test_param_gain_groups_give_the_first_matching_pattern_its_gain(script):
    """--param-gain splits the parameters by name: the first matching pattern's gain, the rest
    in a group without one (the optimiser's); AGD then moves the gained group further."""
    args = script.parse_args(["conv", "--param-gain", "fc.*=2", "--param-gain", "stem*=0.5",
                              "--param-gain", "*=3"])
    assert args.param_gain == [("fc.*", 2.0), ("stem*", 0.5), ("*", 3.0)]
    torch.manual_seed(0)
    net = create_model("resnet_small", in_channels=1, num_classes=10, image_size=28, depth=1,
                       width=8)
    names = {id(p): n for n, p in net.named_parameters()}
    groups = script.param_gain_groups(net, [("fc.*", 2.0), ("stem*", 0.5)])
    by_gain = {g.get("gain"): sorted(names[id(p)] for p in g["params"]) for g in groups}
    assert by_gain[2.0] == ["fc.weight"] and by_gain[0.5] == ["stem.weight"]
    assert len(by_gain[None]) == len(names) - 2
    with pytest.raises(ValueError, match=r"--param-gain head\.\*: matches no parameter"):
        script.param_gain_groups(net, [("head.*", 2.0)])
    for bad in ("fc.*", "fc.*=0", "=2", "fc.*=x"):
        with pytest.raises(SystemExit):
            script.parse_args(["conv", "--param-gain", bad])
    # the gained group really moves further: one step from the same point, gain 2 vs none
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    moves = []
    for gain in (1.0, 2.0):
        torch.manual_seed(1)
        m = create_model("resnet_small", in_channels=1, num_classes=10, image_size=28,
                         depth=1, width=8)
        opt = hyperfree.AGD(script.param_gain_groups(m, [("fc.*", gain)]), model=m)
        before = m.fc.weight.detach().clone()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        moves.append(float((m.fc.weight.detach() - before).norm()))
    assert moves[1] == pytest.approx(2 * moves[0], rel=1e-2)  # up to the retraction's ‖Δ‖²


def test_relative_scales_each_step_by_the_weights_measured_size(script):
    """--relative: before each step every parameter's gain is ‖W‖/ρ (ρ: its norm at the first
    step); a weight grown to twice its size gets twice the step, a zero-init one gain 1."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = hyperfree.AGD([{"params": [p]} for p in net.parameters()], model=net)
    stepper = script.Variant(net, opt, 0.0, "average", relative=True)
    stepper.init_weights()
    rho = float(net[0].weight.detach().norm())
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    stepper.step(torch.nn.functional.mse_loss(net(x), y))
    assert [g["gain"] for g in opt.param_groups] == [1.0] * 4  # at ρ itself
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    grown = float(net[0].weight.detach().norm())
    stepper.step(torch.nn.functional.mse_loss(net(x), y))
    gains = [g["gain"] for g in opt.param_groups]
    assert gains[0] == pytest.approx(grown / rho, rel=1e-6) and gains[0] > 1.5
    assert gains[1] == 1.0  # the bias started at zero: no size to be relative to
    with pytest.raises(SystemExit):  # before any data is read or any optimiser registered
        script.parse_args(["conv", "--relative", "--param-gain", "fc.*=2"])
    with pytest.raises(SystemExit):  # --init-norm sets the gains too (§18's probe)
        script.parse_args(["conv", "--init-norm", "both", "--param-gain", "fc.*=2"])
    assert script.parse_args(["conv", "--init-norm", "step"]).init_norm == "step"


def test_invariant_sets_are_read_from_the_radial_derivatives(script):
    """Measured, not declared: in the pre-activation ResNet each block's conv1 alone (BatchNorm
    follows it) and each stage's stream writers together (the stem or a projection shortcut,
    and the block's conv2: the next BatchNorm divides their sum's scale out); in the pre-norm
    GPT the residual stream's writers together; none in an MLP. The reading leaves BatchNorm's
    statistics and the gradients as they were."""
    torch.manual_seed(0)
    net = create_model("resnet_small", in_channels=1, num_classes=10, image_size=28, depth=1,
                       width=8)
    names = [n.removesuffix(".weight") for n, _ in net.named_parameters()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sets = script.invariant_sets(net, script._examples(net, "fashion-mnist"))
    assert sorted(sorted(names[i] for i in s) for s in sets) == [
        ["stages.0.0.conv1"], ["stages.0.0.conv2", "stem"], ["stages.1.0.conv1"],
        ["stages.1.0.conv2", "stages.1.0.shortcut"], ["stages.2.0.conv1"],
        ["stages.2.0.conv2", "stages.2.0.shortcut"]]
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    gpt = create_model("gpt", in_channels=1, num_classes=65, image_size=0, depth=2, width=32,
                       heads=2, seq_len=64, tie_weights=False)
    hyperfree.AGD(gpt).init_weights()
    names = [n.removesuffix(".weight") for n, _ in gpt.named_parameters()]
    sets = script.invariant_sets(gpt, script._examples(gpt, "tinyshakespeare"))
    assert [sorted(names[i] for i in s) for s in sets] == [sorted(
        ["tok_emb", "pos_emb", "blocks.0.attn.out_proj", "blocks.0.mlp.2",
         "blocks.1.attn.out_proj", "blocks.1.mlp.2"])]
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    assert script.invariant_sets(mlp, script._examples(mlp, "fashion-mnist")) == []


def test_a_relative_set_follows_its_joint_norm(script):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = hyperfree.AGD([{"params": [p]} for p in net.parameters()], model=net)
    stepper = script.Variant(net, opt, 0.0, "average", relative=[[0, 2]])
    stepper.init_weights()
    x, y = torch.randn(32, 8), torch.randn(32, 4)

    def joint() -> float:
        return math.hypot(*(float(p.detach().norm()) for p in (net[0].weight, net[2].weight)))
    rho = joint()
    stepper.step(torch.nn.functional.mse_loss(net(x), y))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    grown = joint()
    stepper.step(torch.nn.functional.mse_loss(net(x), y))
    gains = [g["gain"] for g in opt.param_groups]
    assert gains[0] == gains[2] == pytest.approx(grown / rho, rel=1e-6) and gains[0] > 1.5
    assert gains[1] == gains[3] == 1.0  # not in a set: as they were


def test_stream_g_puts_the_stream_in_g_and_restores_the_forks(script):
    """``--forks stream-g``: while training, a kind's σ in G is √terms (§16's probe)."""
    kind = hyperfree.optim.Kind("linear", forks=1, terms=9)
    with script.stream_in_g(True):
        assert kind.fork_scale == pytest.approx(3.0)
        assert hyperfree.optim.Kind("linear", forks=2).fork_scale == pytest.approx(2.0)
    assert kind.fork_scale == pytest.approx(2 ** 0.5) and kind.stream_scale == pytest.approx(3.0)
    with script.stream_in_g(False):
        assert kind.fork_scale == pytest.approx(2 ** 0.5)


def test_linefit_reads_each_batch_again_without_changing_training(script):
    """--linefit: the stepper reads the batch's input from the model's forward and its target
    from the loss, evaluates the batch again after each step, and the weights end where they
    do without it."""
    def trained(linefit):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                  torch.nn.Linear(16, 4))
        opt = hyperfree.AGD(net, example=torch.randn(2, 8))
        stepper = script.Variant(net, opt, 0.0, "average")
        if linefit:
            stepper.watch()
        gen = torch.Generator().manual_seed(1)
        loss_fn = torch.nn.functional.mse_loss
        for _ in range(4):
            x, y = torch.randn(32, 8, generator=gen), torch.randn(32, 4, generator=gen)
            out = net(x)
            stepper.seen.update(y=y, loss_fn=loss_fn)
            stepper.step(loss_fn(out, y))
        return net, stepper
    plain, _ = trained(False)
    net, stepper = trained(True)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), net.parameters()))
    assert len(stepper.fit.rho) == 4 and all(0 < r < 1.5 for r in stepper.fit.rho)
    args = script.parse_args(["conv", "--linefit", "--hypergain", "0.1"])
    assert args.linefit and args.hypergain == 0.1 and args.hypergain_reference == "last"
    with pytest.raises(SystemExit):  # both set the groups' lr
        script.parse_args(["conv", "--hypergain", "0.1", "--participation", "capped"])


def test_seen_targets_records_the_training_losss_target(script):
    """--linefit's target comes from the training loop's loss function, patched only while
    the run lasts."""
    import hyperfree.train._run as run_module
    plain = run_module.get_loss
    stepper = type("S", (), {"seen": {}})()
    with script.seen_targets({"stepper": stepper}):
        fn = run_module.get_loss("mse")
        y = torch.tensor([0, 2, 1, 2])  # class labels
        fn(torch.zeros(4, 3), y)
    assert stepper.seen["y"] is y and stepper.seen["loss_fn"] is not fn
    assert run_module.get_loss is plain
