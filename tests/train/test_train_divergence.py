"""Divergence is handled, not recorded: a non-finite loss or weight stops ``train()`` with
:class:`TrainingDiverged` (the CLI: one line, exit 3), the last good checkpoint and metrics stay
as they were, ``metrics.jsonl`` is strict JSON (a non-finite number is ``null`` plus a
``nonfinite`` list), and a warning repeated at every step is shown once and then summarised
per epoch.

Run: .venv/bin/python -m pytest -q tests/train/test_train_divergence.py
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Iterator

import pytest
import torch
from _train_helpers import tiny_config, tiny_image_bundle

from hyperfree.cli import main
from hyperfree.train import CHECKPOINT_NAME, TrainingDiverged, load_checkpoint, optimizers, train
from hyperfree.train.record import METRICS_NAME, strict_json
from hyperfree.train.steppers import TorchStepper

torch.set_num_threads(1)


class _Poisoned(TorchStepper):
    """SGD that writes NaN into the first weight after global step ``at`` (1-based)."""

    at = 6
    steps = 0

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().step(loss)
        _Poisoned.steps += 1
        if _Poisoned.steps == self.at:
            with torch.no_grad():
                next(self.module.parameters()).fill_(float("nan"))
        return out


class _Noisy(TorchStepper):
    """SGD that warns at every step (different text each time) and logs an infinite scalar."""

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        super().step(loss)
        warnings.warn(f"step skipped at {id(loss)}", RuntimeWarning)
        return {"ratio": torch.tensor(float("inf"))}


@pytest.fixture
def registered() -> Iterator[None]:
    def poisoned(model, args):
        _Poisoned.steps = 0
        return _Poisoned(model, torch.optim.SGD(model.parameters(), lr=0.01))

    def noisy(model, args):
        return _Noisy(model, torch.optim.SGD(model.parameters(), lr=0.01))

    optimizers.register_optimizer("zz-poisoned", description="test")(poisoned)
    optimizers.register_optimizer("zz-noisy", description="test")(noisy)
    yield
    optimizers._REGISTRY.unregister("zz-poisoned")
    optimizers._REGISTRY.unregister("zz-noisy")


def test_nan_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path: Path,
                                                                    registered: None) -> None:
    cfg = tiny_config(epochs=3, optimizer="zz-poisoned", out_dir=str(tmp_path), log_every=1)
    with pytest.raises(TrainingDiverged) as err:  # 4 steps an epoch: NaN after step 6
        train(cfg, data=tiny_image_bundle())
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("training diverged in epoch 2 (steps 7-7): the training loss is "
                              f"not finite; the last good checkpoint ({tmp_path / CHECKPOINT_NAME})"
                              " is kept")
    assert err.value.checkpoint == tmp_path / CHECKPOINT_NAME and err.value.epoch == 1
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert len((tmp_path / METRICS_NAME).read_text().splitlines()) == 1


def test_without_periodic_checks_the_epoch_end_still_catches_it(registered: None) -> None:
    cfg = tiny_config(epochs=2, optimizer="zz-poisoned", log_every=1000)
    with pytest.raises(TrainingDiverged, match=r"epoch 2 \(steps 5-8\).*nothing was saved"):
        train(cfg, data=tiny_image_bundle())


def test_cli_reports_divergence_in_one_line_with_exit_3(tmp_path: Path, registered: None,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out = tmp_path / "run"
    code = main(["train", "--optimizer", "zz-poisoned", "--out", str(out), "--epochs", "2",
                 "--limit-batches", "4", "--depth", "3", "--width", "16", "--test-bs", "500",
                 "--no-progress", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hyperfree train: training diverged in epoch 2")
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1


def test_metrics_stay_strict_json_and_warnings_are_summarised(tmp_path: Path,
                                                             registered: None) -> None:
    cfg = tiny_config(epochs=2, optimizer="zz-noisy", out_dir=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, data=tiny_image_bundle())
    texts = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(texts) == 3, texts  # 8 warnings: the first, then one summary per epoch
    assert texts[0].startswith("step skipped at ")
    assert texts[1].startswith("... and 3 more like this in epoch 1 (step skipped at ")
    assert texts[2].startswith("... and 4 more like this in epoch 2 (step skipped at ")

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in metrics.jsonl")

    for line in (tmp_path / METRICS_NAME).read_text().splitlines():
        record = json.loads(line, parse_constant=refuse)
        assert record["ratio_mean"] is None and record["nonfinite"] == [
            "ratio_max", "ratio_mean", "ratio_min"]
        assert math.isfinite(record["train_loss"])


def test_strict_json_lists_what_it_nulled() -> None:
    text = strict_json({"a": float("nan"), "b": 1.5, "c": float("-inf"), "d": "x"})
    assert text == '{"a": null, "b": 1.5, "c": null, "d": "x", "nonfinite": ["a", "c"]}'
    assert strict_json({"b": 1.5}) == '{"b": 1.5}'
