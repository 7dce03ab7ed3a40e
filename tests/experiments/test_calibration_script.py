"""``benchmarks/calibration.py``: a finished run's test loss at the loss-optimal temperature.
The run is rebuilt from its checkpoint and evaluated as the loop evaluates it (AGD at its
average, BatchNorm recomputed there), so the loss at T = 1 is the run's own last record; the
grid recovers a known over-confidence; a run without a checkpoint or a square-loss run is
refused with the remedy."""
from __future__ import annotations

import pytest
import torch

from hyperfree.train import TrainConfig, train


@pytest.fixture(scope="module")
def calibration(load_benchmark):
    return load_benchmark("calibration")


def _run(tmp_path, name: str, **changes) -> str:
    base = dict(arch="fcn", dataset="fashion-mnist", depth=3, width=16, train_bs=32,
                test_bs=200, epochs=1, limit_batches=4, loss="xent", progress=False,
                plots=False, device="cpu", num_workers=0, out_dir=str(tmp_path / name))
    train(TrainConfig(**{**base, **changes}))
    return base["out_dir"]


@pytest.mark.parametrize("changes", [
    {"optimizer": "agd"},  # evaluated at AGD's average
    {"optimizer": "adamw", "lr": 1e-2},
    {"optimizer": "agd", "arch": "resnet_small", "width": 4},  # BatchNorm recomputed there
], ids=["agd", "adamw", "agd-batchnorm"])
def test_the_loss_at_one_is_the_runs_own_and_the_best_is_no_worse(calibration, tmp_path,
                                                                   changes, capsys):
    run = _run(tmp_path, "run", **changes)
    (row,) = calibration.main([run])
    assert row["loss"] == pytest.approx(row["recorded"], rel=1e-5)
    assert row["best_loss"] <= row["loss"] + 1e-12
    assert row["best_t"] in calibration.TEMPERATURES
    out = capsys.readouterr().out
    assert "loss(T*)" in out and "note:" not in out


def test_the_grid_recovers_a_known_temperature(calibration):
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(4000, 7, generator=gen).log_softmax(1)
    target = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
    tempered = calibration.Tempered(calibration.TEMPERATURES)
    loss = tempered(2.0 * logp, target)  # twice as confident as the data
    losses = tempered.losses()
    assert float(loss) == pytest.approx(losses[min(losses, key=lambda t: abs(t - 1.0))])
    assert min(losses, key=losses.__getitem__) == pytest.approx(2.0, rel=0.1)
    for t in (0.5, 1.0, 2.0):
        near = min(losses, key=lambda s: abs(s - t))
        ref = torch.nn.functional.cross_entropy(2.0 * logp / near, target)
        assert losses[near] == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("what, message", [
    ("missing", "has no checkpoint.pt: pass the directory of a run"),
    ("mse", "trained with loss 'mse': a temperature scales the logits of a cross-entropy"),
])
def test_bad_runs_are_refused_with_the_remedy(calibration, tmp_path, capsys, what, message):
    run = str(tmp_path / "nothing") if what == "missing" else _run(
        tmp_path, "mse", optimizer="agd", loss="mse")
    with pytest.raises(SystemExit) as exc:
        calibration.main([run])
    assert exc.value.code == 2 and message in capsys.readouterr().err
