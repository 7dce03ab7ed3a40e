"""The towers in the harness (``hyperfree.train.towers``): the spec parser accepts every stack
and returns ``None`` for non-stacks, refuses ``--lr``/``--momentum``/``--gain`` and DDP, and its
stepper logs ``lr``, ``lr@1`` … and round-trips ``state_dict``.

Run: .venv/bin/python -m pytest -q tests/train/test_train_towers.py
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperfree import hyper
from hyperfree.train.optimizers import OptimArgs, build_optimizer
from hyperfree.train.steppers import Stepper
from hyperfree.train.towers import HyperStepper, parse_spec


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    return model, torch.randn(64, 6), torch.randint(0, 3, (64,))


def test_parse_spec_accepts_stacks_only() -> None:
    assert parse_spec("not-an-optimiser") is None
    assert parse_spec("agdx") is None
    for text in ["adagrad", "sgd(0.01)", "adam(1e-3)/sgd(1e-5)", "rmsprop / rmsproplr / sgd"]:
        assert callable(parse_spec(text))
    with pytest.raises(hyper.StackSyntaxError, match="column 10"):
        parse_spec("sgd(0.01)/sgdd")


def test_registry_builds_stepper_that_logs_every_level() -> None:
    model, x, y = _problem()
    stepper = build_optimizer("sgd(0.05, 0.9)/adam(1e-3)/sgd(1e-5)", model)
    assert isinstance(stepper, Stepper) and isinstance(stepper, HyperStepper)
    stepper.init_weights()
    before = [p.detach().clone() for p in model.parameters()]
    logs = {}
    for _ in range(3):
        logs = stepper.step(F.cross_entropy(stepper.module(x), y))
    assert set(logs) == {"lr", "momentum", "lr@1", "beta1@1", "beta2@1", "lr@2"}
    assert all(v.dim() == 0 and not v.requires_grad for v in logs.values())
    assert float(logs["lr@2"]) == pytest.approx(1e-5)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    stepper.module.eval()
    with torch.no_grad():
        assert stepper.module(x).shape == (64, 3)
    other = build_optimizer("sgd(0.05, 0.9)/adam(1e-3)/sgd(1e-5)", _problem()[0])
    other.load_state_dict(stepper.state_dict())
    assert other.module.hyperparameters() == stepper.module.hyperparameters()


@pytest.mark.parametrize("args", [OptimArgs(lr=0.1), OptimArgs(momentum=0.9),
                                  OptimArgs(gain=2.0)])
def test_flags_with_a_stack_are_refused(args: OptimArgs) -> None:
    with pytest.raises(ValueError, match="cannot be combined with the stack"):
        build_optimizer("sgd(0.01)/sgd(1e-4)", _problem()[0], args)


def test_two_gloo_ranks_train_a_tower_like_one_process(tmp_path) -> None:
    """Under torchrun a tower is not wrapped in DDP: HyperModule averages gradients and
    hypergradients itself, so 2 ranks on half batches equal 1 process on the global batch."""
    import socket

    import torch.multiprocessing as mp
    from _train_helpers import ddp_worker, tiny_config, tiny_image_bundle

    from hyperfree.train import train

    spec, steps = "sgd(0.05)/sgd(1e-3)", 3
    torch.set_num_threads(1)
    single = train(tiny_config(epochs=1, limit_batches=steps, train_bs=32, optimizer=spec),
                   data=tiny_image_bundle())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "rank0.pt"
    mp.start_processes(ddp_worker, args=(2, port, steps, str(out), spec), nprocs=2, join=True,
                       start_method="fork")
    ddp = torch.load(out, weights_only=True)
    for name, w in single.model.state_dict().items():
        torch.testing.assert_close(ddp["weights"][name], w, rtol=1e-5, atol=1e-6)
    assert ddp["records"][0]["lr_mean"] == pytest.approx(single.records[0]["lr_mean"], rel=1e-5)
