"""A run's length: ``epochs``/``steps`` = N or ``"auto"`` (stop when AGD's η has faded).

* the rule on records: η̄ (the step-weighted mean over the last epoch of records) below 1/20 of
  its peak stops; a flat η, one record, or a spike that stays above 1/20 do not;
* a real run that must stop: an η that halves every epoch stops at epoch 6 (0.5**5 < 1/20 <
  0.5**4), the same under ``steps="auto"`` at the step an independent loop predicts; a run that
  must not: a constant η runs to the cap; resuming a stopped run trains nothing;
* the default length: ``auto`` for AGD, 30 epochs for the others; ``auto`` refused for an
  optimiser without η and with a decaying schedule; a step-counted run records ~10 times.

Run: .venv/bin/python -m pytest -q tests/train/test_train_length.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
from _train_helpers import tiny_config, tiny_image_bundle

from hyperfree.train import TrainConfig, TorchStepper, read_metrics, resolve_config, train
from hyperfree.train import length as length_module
from hyperfree.train import optimizers
from hyperfree.train.length import RunLength, default_eval_every, eta_faded

torch.set_num_threads(1)


def _records(etas: list[float], per_epoch: int = 1, steps: int = 10) -> list[dict]:
    return [{"epoch": (i + 1) / per_epoch, "step": (i + 1) * steps, "eta_mean": v}
            for i, v in enumerate(etas)]


def test_rule_stops_below_a_twentieth_of_the_peak_only() -> None:
    assert eta_faded(_records([1.0, 0.3, 0.049]))
    assert not eta_faded(_records([1.0, 0.3, 0.051]))
    assert not eta_faded(_records([0.04]))  # one record: nothing to compare with
    assert not eta_faded(_records([0.2, 0.2, 0.2, 0.2]))  # flat: never
    assert not eta_faded(_records([0.01, 1.0, 0.06]))  # the peak may come late
    assert eta_faded(_records([1.0, float("nan"), 0.01]))  # a non-finite mean is skipped
    assert not eta_faded([{"epoch": 1, "step": 5, "train_loss": 1.0},
                          {"epoch": 2, "step": 10, "train_loss": 0.5}])  # no η at all


def test_rule_averages_over_the_last_epoch_of_sub_epoch_records() -> None:
    # 4 records an epoch: a single low record is not enough while the epoch's mean is high
    etas = [1.0, 1.0, 1.0, 1.0, 0.01]
    assert not eta_faded(_records(etas, per_epoch=4))
    assert eta_faded(_records(etas, per_epoch=1))
    low = [1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.01, 0.01]
    assert eta_faded(_records(low, per_epoch=4))


def test_run_length_positions_and_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = RunLength(3, None, 10, None)
    assert (fixed.max_steps, fixed.max_epochs, fixed.auto) == (30, 3, False)
    assert fixed.segment_end(0, 0) == 10 and not fixed.finished(29, 9, [])
    assert fixed.finished(30, 0, [])
    steps = RunLength(None, 25, 10, None)
    assert steps.eval_every == default_eval_every(25, 10) == 3
    assert steps.segment_end(4, 24) == 5  # the last step
    auto = RunLength("auto", None, 10, None)
    assert auto.max_steps == length_module.AUTO_MAX_EPOCHS * 10 and auto.auto
    faded = _records([1.0, 0.01])
    assert not auto.finished(20, 5, faded[:1] + [{**faded[1], "step": 20}])  # mid-epoch
    assert auto.finished(20, 0, [faded[0], {**faded[1], "step": 20}])
    assert RunLength(None, "auto", 40, None).eval_every == 10


@pytest.mark.parametrize("value", [0, -1, 1.5, "many", True])
def test_length_values_are_checked(value: object) -> None:
    with pytest.raises(ValueError, match="epochs must be an integer >= 1 or 'auto'"):
        TrainConfig(epochs=value)  # type: ignore[arg-type]


def test_default_length_is_auto_for_agd_and_thirty_epochs_otherwise() -> None:
    assert TrainConfig().epochs is None and TrainConfig().steps is None
    assert resolve_config(TrainConfig()).epochs == "auto"
    assert resolve_config(TrainConfig(optimizer="agd-paper")).epochs == "auto"
    assert resolve_config(TrainConfig(optimizer="adam")).epochs == 30
    assert resolve_config(TrainConfig(optimizer="sgd(0.01)/sgd(1e-4)")).epochs == 30
    assert resolve_config(TrainConfig(steps=7)).epochs is None
    with pytest.raises(ValueError, match="adam reports no η; give epochs=N"):
        resolve_config(TrainConfig(optimizer="adam", epochs="auto"))
    with pytest.raises(ValueError, match="adam reports no η; give steps=N"):
        resolve_config(TrainConfig(optimizer="adam", steps="auto"))


class _FadingEta(TorchStepper):
    """SGD that logs η = rate ** (step / 4): with 4 steps an epoch, η's epoch mean is
    multiplied by ``rate`` every epoch."""

    rate = 0.5

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, torch.optim.SGD(model.parameters(), lr=1e-3))
        self.steps = 0

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        super().step(loss)
        self.steps += 1
        return {"eta": torch.tensor(self.rate ** ((self.steps - 1) / 4))}

    def state_dict(self) -> dict:
        return {"opt": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["opt"])
        self.steps = int(state["steps"])


@pytest.fixture
def fading() -> Iterator[type[_FadingEta]]:
    optimizers.register_optimizer("zz-fading", description="test", reports_eta=True)(
        lambda model, args: _FadingEta(model))
    yield _FadingEta
    optimizers._REGISTRY.unregister("zz-fading")
    _FadingEta.rate = 0.5


def test_auto_run_stops_where_eta_has_faded(fading: type[_FadingEta], tmp_path: Path) -> None:
    cfg = tiny_config(epochs="auto", optimizer="zz-fading", out_dir=str(tmp_path))
    history = train(cfg, data=tiny_image_bundle())  # 64 examples, batch 16: 4 steps an epoch
    # epoch means fall by 0.5 an epoch: 0.5**4 = 0.0625 >= 1/20 > 0.5**5 = 0.03125
    assert [r["epoch"] for r in history.records] == [1, 2, 3, 4, 5, 6]
    before = (tmp_path / "metrics.jsonl").read_bytes()
    again = train(cfg.replace(resume=True), data=tiny_image_bundle())  # stopped stays stopped
    assert len(again.records) == 6 and (tmp_path / "metrics.jsonl").read_bytes() == before


def test_auto_run_with_a_steady_eta_runs_to_its_cap(fading: type[_FadingEta],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fading.rate = 1.0
    monkeypatch.setattr(length_module, "AUTO_MAX_EPOCHS", 8)
    history = train(tiny_config(epochs="auto", optimizer="zz-fading"), data=tiny_image_bundle())
    assert [r["epoch"] for r in history.records] == list(range(1, 9))


def test_steps_auto_stops_at_the_record_an_independent_loop_predicts(
        fading: type[_FadingEta]) -> None:
    history = train(tiny_config(epochs=None, steps="auto", optimizer="zz-fading"),
                    data=tiny_image_bundle())
    # a record every step (4 an epoch); η̄ = the mean of the last 4 steps' η; peak = 1 (step 1)
    etas = [0.5 ** (k / 4) for k in range(200)]
    expected = next(k for k in range(1, 200) if sum(etas[max(0, k - 3):k + 1])
                    / len(etas[max(0, k - 3):k + 1]) < 1 / 20) + 1
    assert [r["step"] for r in history.records] == list(range(1, expected + 1))


def test_a_step_counted_run_records_about_ten_times(tmp_path: Path) -> None:
    history = train(tiny_config(epochs=None, steps=40, out_dir=str(tmp_path)),
                    data=tiny_image_bundle())
    assert [r["step"] for r in history.records] == list(range(4, 41, 4))
    assert len(read_metrics(tmp_path)) == 10
    assert json.loads((tmp_path / "config.json").read_text())["config"]["eval_every"] == 4
