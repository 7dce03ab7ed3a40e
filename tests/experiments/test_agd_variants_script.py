"""benchmarks/agd_variants.py: with no option it runs exactly the default preset, and each
option changes only the piece it names (the probes of docs/agd-stability.md §11 compare
against the default, so a stale default in the script would compare against something else)."""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from hyperfree.models import create_model
from hyperfree.optim import DEFAULT_PRESET, PRESETS
from hyperfree.optim.pieces import Gradient, Momentum, PolyAverage

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
])
def test_an_option_changes_only_its_piece(script, argv, field, value):
    got = _fields(script.variant_preset(script.parse_args(["gpt", *argv])))
    want = _fields(PRESETS[DEFAULT_PRESET])
    assert got.pop(field) == value
    want.pop(field)
    assert got == want


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
