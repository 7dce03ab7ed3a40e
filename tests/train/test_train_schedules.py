"""Learning-rate schedules of the learning-rate optimisers (``--schedule``, ``--warmup-steps``).

* :func:`lr_multiplier` against the formulas written out independently, at chosen points
  (warmup from 0, end of warmup at lr, cosine half-way at ½, linear and cosine towards 0);
* in a real run the lr every optimiser step used (the param group's, read by a callback) and
  the lr logged for that step both equal ``lr · m(t)`` over ``T = epochs × batches`` steps;
* a run interrupted mid-epoch and resumed equals a straight run bit for bit (weights, records
  with ``lr_*``): the schedule's step counter lives in the stepper's ``state_dict``;
  extending a decaying schedule's run is refused, a constant schedule's is not;
* ``config.json`` records the resolved schedule with the run's total steps;
* AGD, peers and stacks refuse the flags with one line; bad values are one-line errors.

Run: .venv/bin/python -m pytest -q tests/train/test_train_schedules.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _train_helpers import InterruptAt, tiny_config, tiny_image_bundle

from hyperfree.train import (CONFIG_NAME, Callback, CheckpointError, StepInfo,
                             TrainingInterrupted, resolve_config, train)
from hyperfree.train.optimizers import OptimArgs, resolve_optim_args
from hyperfree.train.schedules import Schedule, lr_multiplier


@pytest.mark.parametrize("schedule, step, expected", [
    ("constant", 0, 1 / 4), ("constant", 3, 1.0), ("constant", 99, 1.0),
    ("cosine", 0, 1 / 4), ("cosine", 4, 1.0), ("cosine", 4 + 8, 0.5),
    ("cosine", 4 + 15, 0.5 * (1 + math.cos(math.pi * 15 / 16))),
    ("linear", 2, 3 / 4), ("linear", 4, 1.0), ("linear", 4 + 4, 0.75), ("linear", 19, 1 / 16),
])
def test_multiplier_formula(schedule: str, step: int, expected: float) -> None:
    # W = 4 warmup steps, T = 20 steps: the decay runs over the last 16
    assert lr_multiplier(schedule, step, warmup_steps=4, total_steps=20) == \
        pytest.approx(expected, rel=1e-12)


def test_without_warmup_the_first_step_is_at_full_lr() -> None:
    assert lr_multiplier("cosine", 0, warmup_steps=0, total_steps=10) == 1.0
    assert lr_multiplier("linear", 9, warmup_steps=0, total_steps=10) == pytest.approx(0.1)


class _Record(Callback):
    """The lr of every step: as the optimiser's group held it, and as the stepper logged it."""

    def __init__(self) -> None:
        self.used: list[float] = []
        self.logged: list[float] = []
        self.stepper: Any = None

    def on_step_end(self, info: StepInfo) -> None:
        self.logged.append(float(info.logs["lr"]))
        self.used.append(self.stepper.inner.optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_run_steps_at_the_scheduled_lr(schedule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperfree.train import _run

    rec = _Record()
    wrap = _run.schedule_stepper

    def spy(*args: Any) -> Any:
        rec.stepper = wrap(*args)
        return rec.stepper

    monkeypatch.setattr(_run, "schedule_stepper", spy)
    cfg = tiny_config(optimizer="adamw", lr=0.01, schedule=schedule, warmup_steps=3, epochs=2,
                      loss="xent")  # 64 samples / 16 = 4 batches: T = 8
    history = train(cfg, callbacks=[rec], data=tiny_image_bundle())
    expected = [0.01 * lr_multiplier(schedule, t, warmup_steps=3, total_steps=8)
                for t in range(8)]
    assert rec.used == pytest.approx(expected, rel=1e-12)
    assert rec.logged == pytest.approx(expected, rel=1e-6)
    assert history.records[0]["lr_min"] == pytest.approx(expected[0], rel=1e-6)


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_scheduled_run_resumes_exactly(tmp_path: Path, optimizer: str) -> None:
    bundle = tiny_image_bundle()
    cfg = tiny_config(optimizer=optimizer, schedule="cosine", warmup_steps=2, epochs=2,
                      loss="xent", width=8)
    straight = train(cfg, data=bundle)
    with pytest.raises(TrainingInterrupted):
        train(cfg.replace(out_dir=str(tmp_path)), callbacks=[InterruptAt(3)], data=bundle)
    resumed = train(cfg.replace(out_dir=str(tmp_path), resume=True), data=bundle)
    assert _strip(resumed.records) == _strip(straight.records)
    assert "lr_mean" in resumed.records[0]
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_decaying_schedule_is_tied_to_the_run_length(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    for schedule, out in (("linear", tmp_path / "lin"), ("constant", tmp_path / "const")):
        train(tiny_config(optimizer="sgd", schedule=schedule, warmup_steps=1, epochs=1,
                          out_dir=str(out)), data=bundle)
    with pytest.raises(CheckpointError, match=r"linear schedule decays to 0 at step 4; it "
                                              r"cannot continue over 8 steps"):
        train(tiny_config(optimizer="sgd", schedule="linear", warmup_steps=1, epochs=2,
                          out_dir=str(tmp_path / "lin"), resume=True), data=bundle)
    history = train(tiny_config(optimizer="sgd", schedule="constant", warmup_steps=1, epochs=2,
                                out_dir=str(tmp_path / "const"), resume=True), data=bundle)
    assert [r["epoch"] for r in history.records] == [1, 2]


def test_config_records_the_resolved_schedule(tmp_path: Path) -> None:
    train(tiny_config(optimizer="adam", schedule="linear", warmup_steps=2, epochs=1,
                      out_dir=str(tmp_path)), data=tiny_image_bundle())
    body = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert (body["config"]["schedule"], body["config"]["warmup_steps"]) == ("linear", 2)
    assert body["resolved"]["optimizer"]["schedule"] == {"name": "linear", "warmup_steps": 2,
                                                         "total_steps": 4}
    assert body["resolved"]["optimizer"]["lr"] == 1e-3
    stored = resolve_config(tiny_config(optimizer="adam"))
    assert (stored.schedule, stored.warmup_steps) == ("constant", 0)


@pytest.mark.parametrize("spec, args, message", [
    ("agd", OptimArgs(schedule="cosine"),
     "--schedule is not used by agd: it has no learning rate to schedule; it takes --gain"),
    ("agd-spectral-momentum", OptimArgs(warmup_steps=10), "--warmup-steps is not used by "
     "agd-spectral-momentum: it has no learning rate to schedule"),
    ("prodigy", OptimArgs(schedule="linear"), "--schedule is not used by prodigy: it has no "
     "learning rate to schedule; it takes no flags"),
    ("sgd(0.01)/sgd(1e-4)", OptimArgs(schedule="cosine"),
     "--schedule cannot be combined with the stack"),
    ("adam", OptimArgs(schedule="step"),
     "adam needs --schedule one of constant, cosine, linear, got 'step'"),
    ("adamw", OptimArgs(warmup_steps=-1), "adamw needs --warmup-steps an integer >= 0, got -1"),
    ("adamw", OptimArgs(weight_decay=-0.1), "adamw needs --weight-decay in [0, 3.403e38]"),
    ("adam", OptimArgs(weight_decay=0.1), "--weight-decay is not used by adam: it takes --lr, "
     "--schedule, --warmup-steps"),
])
def test_schedule_flags_refused_in_one_line(spec: str, args: OptimArgs, message: str) -> None:
    with pytest.raises(ValueError) as err:
        resolve_optim_args(spec, args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_warmup_longer_than_the_run_is_refused() -> None:
    with pytest.raises(ValueError, match="--warmup-steps 8 must be below the run's 8 steps"):
        Schedule("cosine", 8, 8)
    with pytest.raises(ValueError, match=r"--warmup-steps 9 must be below the run's 8 steps"):
        train(tiny_config(optimizer="sgd", warmup_steps=9, epochs=2),
              data=tiny_image_bundle())
