"""A run's length: ``epochs``/``steps`` = N or ``"auto"`` (stop when the training loss has
stopped falling).

* the rule on records: the fall of the training loss per epoch over the last epoch, below 1/20
  of its peak, stops; a flat loss, one record, or a rate that stays above 1/20 do not;
* real runs: a stepper whose loss falls geometrically stops at the first record where the rule
  says so on the run's own records (and not before), the same under ``steps="auto"``; a loss
  that keeps falling steadily runs to the cap; resuming a stopped run trains nothing;
* the default length: ``auto`` for AGD, 30 epochs for the others; ``auto`` refused with a
  decaying schedule; a step-counted run records ~10 times.

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
from hyperfree.train.length import RunLength, default_eval_every, loss_rates, progress_faded

torch.set_num_threads(1)


def _records(losses: list[float], per_epoch: int = 1, steps: int = 10) -> list[dict]:
    return [{"epoch": (i + 1) / per_epoch, "step": (i + 1) * steps, "train_loss": v}
            for i, v in enumerate(losses)]


def test_rule_stops_below_a_twentieth_of_the_peak_rate_only() -> None:
    # rates 1.0, then 0.049 / 0.051 per epoch
    assert progress_faded(_records([3.0, 2.0, 1.951]))
    assert not progress_faded(_records([3.0, 2.0, 1.949]))
    assert not progress_faded(_records([3.0, 2.0]))  # one rate: nothing to compare with
    assert not progress_faded(_records([1.0, 1.0, 1.0, 1.0]))  # flat from the start: never
    assert not progress_faded(_records([3.0, 2.99, 1.0, 0.85]))  # the peak may come late
    assert progress_faded(_records([3.0, 2.0, 1.0, 1.5]))  # rising: stop
    assert not progress_faded([{"epoch": 1, "step": 5}, {"epoch": 2, "step": 10},
                               {"epoch": 3, "step": 15}])  # no loss at all


def test_rates_span_the_last_epoch_of_sub_epoch_records() -> None:
    recs = _records([4.0, 3.0, 2.0, 1.0, 0.9, 0.8], per_epoch=4)
    assert loss_rates(recs) == [None] * 4 + [pytest.approx(3.1), pytest.approx(2.2)]
    assert loss_rates(_records([1.0, float("nan"), 0.5])) == [None, None, None]


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
    faded = _records([3.0, 2.0, 1.99])
    assert not auto.finished(30, 5, faded)  # mid-epoch
    assert auto.finished(30, 0, faded) and not auto.finished(31, 0, faded)  # at its record
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
    assert resolve_config(TrainConfig(optimizer="adam", epochs="auto")).epochs == "auto"
    with pytest.raises(ValueError, match="schedule 'cosine' decays over a known number"):
        resolve_config(TrainConfig(optimizer="adam", epochs="auto", schedule="cosine"))


class _Shrinking(TorchStepper):
    """Multiplies every weight by ``rate`` each step (no gradient step): the model's output
    falls geometrically, so its square loss approaches ``E[y²]`` at a geometric rate."""

    rate = 0.8

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, torch.optim.SGD(model.parameters(), lr=0.0))

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        super().step(loss)
        with torch.no_grad():
            for p in self.module.parameters():
                p.mul_(self.rate)
        return {}


@pytest.fixture
def shrinking() -> Iterator[type[_Shrinking]]:
    optimizers.register_optimizer("zz-shrinking", description="test")(
        lambda model, args: _Shrinking(model))
    yield _Shrinking
    optimizers._REGISTRY.unregister("zz-shrinking")
    _Shrinking.rate = 0.8


def _first_stop(records: list[dict]) -> int:
    return next(i for i in range(1, len(records) + 1) if progress_faded(records[:i]))


def test_auto_run_stops_where_the_loss_has_stopped_falling(shrinking: type[_Shrinking],
                                                          tmp_path: Path) -> None:
    cfg = tiny_config(epochs="auto", optimizer="zz-shrinking", out_dir=str(tmp_path),
                      loss="mse")
    history = train(cfg, data=tiny_image_bundle())  # 64 examples, batch 16: 4 steps an epoch
    n = len(history.records)
    assert 3 <= n < 30 and _first_stop(history.records) == n  # there, and not before
    before = (tmp_path / "metrics.jsonl").read_bytes()
    again = train(cfg.replace(resume=True), data=tiny_image_bundle())  # stopped stays stopped
    assert len(again.records) == n and (tmp_path / "metrics.jsonl").read_bytes() == before


def test_auto_run_whose_loss_keeps_falling_runs_to_its_cap(shrinking: type[_Shrinking],
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    shrinking.rate = 0.999  # the loss's fall per epoch shrinks by 0.992 an epoch: never 1/20
    monkeypatch.setattr(length_module, "AUTO_MAX_EPOCHS", 8)
    history = train(tiny_config(epochs="auto", optimizer="zz-shrinking", loss="mse"),
                    data=tiny_image_bundle())
    assert [r["epoch"] for r in history.records] == list(range(1, 9))


def test_steps_auto_stops_at_the_first_record_the_rule_names(shrinking: type[_Shrinking]
                                                             ) -> None:
    history = train(tiny_config(epochs=None, steps="auto", optimizer="zz-shrinking",
                                loss="mse"), data=tiny_image_bundle())
    steps = [r["step"] for r in history.records]
    assert steps == list(range(1, len(steps) + 1))  # a record every step (4 an epoch)
    assert _first_stop(history.records) == len(steps) >= 6


def test_a_step_counted_run_records_about_ten_times(tmp_path: Path) -> None:
    history = train(tiny_config(epochs=None, steps=40, out_dir=str(tmp_path)),
                    data=tiny_image_bundle())
    assert [r["step"] for r in history.records] == list(range(4, 41, 4))
    assert len(read_metrics(tmp_path)) == 10
    assert json.loads((tmp_path / "config.json").read_text())["config"]["eval_every"] == 4
