"""``--tensorboard``: TensorBoard event files read back with TensorBoard's own reader.

* every step's training loss and every scalar the stepper logs (``eta`` for AGD, ``lr`` for a
  scheduled AdamW) are in the events at their global step, equal to what the loop saw;
* every number of every ``metrics.jsonl`` record is there as ``epoch/<key>`` at its step;
* per-step values are buffered and written at the loop's sync points only (every
  ``log_every`` batches and at each record), not once per step;
* a run interrupted and resumed has every step exactly once;
* without the tensorboard package: a one-line ValueError naming the extra (exit 2 from the CLI).

The tests that read events back skip when tensorboard is not installed (it is in the ``dev``
extra); the missing-package error is checked either way.

Run: .venv/bin/python -m pytest -q tests/train/test_train_tensorboard.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from _train_helpers import tiny_config, tiny_image_bundle

from hyperfree.cli import main
from hyperfree.train import Callback, StepInfo, TrainingInterrupted, read_metrics, train
from hyperfree.train import tensorboard as tb_module

def _events(run_dir: Path) -> Any:
    """TensorBoard's own reader over the run's event files (skips without tensorboard)."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"),
                                             size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def _needs_tensorboard() -> None:
    pytest.importorskip("tensorboard")


def _series(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


class _Seen(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_step_end(self, info: StepInfo) -> None:
        self.rows.append({"step": info.global_step, "loss": float(info.loss),
                          **{k: float(v) for k, v in info.logs.items()}})


@pytest.mark.parametrize("optimizer, extra, logged", [
    ("agd", {}, "eta"),
    ("adamw", {"schedule": "cosine", "warmup_steps": 2}, "lr"),
])
def test_every_step_and_record_scalar_is_written(tmp_path: Path, optimizer: str,
                                                 extra: dict[str, Any], logged: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    flush = tb_module.TensorBoardLog.flush_steps

    def counting(self: Any) -> None:
        if self._steps:
            sizes.append(len(self._steps))
        flush(self)

    _needs_tensorboard()
    monkeypatch.setattr(tb_module.TensorBoardLog, "flush_steps", counting)
    seen = _Seen()
    cfg = tiny_config(optimizer=optimizer, epochs=2, log_every=3, loss="xent",
                      out_dir=str(tmp_path), tensorboard=True, **extra)
    train(cfg, callbacks=[seen], data=tiny_image_bundle())  # 4 batches an epoch: 8 steps
    assert sizes == [3, 1, 3, 1]  # at batches 3 and 4 (the record) of each epoch
    acc = _events(tmp_path)
    for name in ("loss", logged):
        got = _series(acc, f"step/{name}")
        assert [s for s, _ in got] == list(range(1, 9))
        assert [v for _, v in got] == pytest.approx([r[name] for r in seen.rows], rel=1e-6)
    records = read_metrics(tmp_path)
    numbers = [k for k, v in records[0].items() if k != "step" and isinstance(v, (int, float))]
    assert {"train_loss", "test_acc", f"{logged}_mean", "rel_update"} <= set(numbers)
    for key in numbers:
        got = _series(acc, f"epoch/{key}")
        assert [s for s, _ in got] == [r["step"] for r in records], key
        assert [v for _, v in got] == pytest.approx([r[key] for r in records], rel=1e-6), key


class _InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, info: StepInfo) -> None:
        if info.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_and_resumed_run_has_every_step_once(tmp_path: Path) -> None:
    _needs_tensorboard()
    bundle = tiny_image_bundle()
    cfg = tiny_config(epochs=2, log_every=3, out_dir=str(tmp_path), tensorboard=True)
    with pytest.raises(TrainingInterrupted):
        train(cfg, callbacks=[_InterruptAt(5)], data=bundle)
    train(cfg.replace(resume=True), data=bundle)
    acc = _events(tmp_path)
    assert [s for s, _ in _series(acc, "step/eta")] == list(range(1, 9))
    assert [s for s, _ in _series(acc, "epoch/train_loss")] == [4, 8]


def test_missing_tensorboard_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match=r"pip install 'hyperfree\[tensorboard\]'"):
        train(tiny_config(out_dir=str(tmp_path / "a"), tensorboard=True),
              data=tiny_image_bundle())
    assert main(["train", "--tensorboard", "--out", str(tmp_path / "b"), "--epochs", "1",
                 "--limit-batches", "1", "--no-progress", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "--tensorboard needs the tensorboard package" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="tensorboard=True needs out_dir"):
        tiny_config(out_dir=None, tensorboard=True)


def test_cli_flag_reaches_the_config(tmp_path: Path) -> None:
    _needs_tensorboard()
    out = tmp_path / "run"
    assert main(["train", "--tensorboard", "--out", str(out), "--epochs", "1",
                 "--limit-batches", "2", "--depth", "3", "--width", "16", "--test-bs", "500",
                 "--no-progress", "--no-plots"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["tensorboard"] is True
    assert [s for s, _ in _series(_events(out), "step/loss")] == [1, 2]


def test_steps_after_the_checkpoint_are_not_doubled_after_a_crash(tmp_path: Path) -> None:
    from hyperfree.train import CHECKPOINT_NAME

    _needs_tensorboard()
    bundle = tiny_image_bundle()
    cfg = tiny_config(epochs=1, log_every=3, out_dir=str(tmp_path), tensorboard=True)
    train(cfg, data=bundle)
    epoch_one = (tmp_path / CHECKPOINT_NAME).read_bytes()
    train(cfg.replace(epochs=2, resume=True), data=bundle)
    first = _series(_events(tmp_path), "step/loss")
    # a crash after the events of steps 5..8 were written but before their checkpoint was
    (tmp_path / CHECKPOINT_NAME).write_bytes(epoch_one)
    train(cfg.replace(epochs=2, resume=True), data=bundle)
    again = _series(_events(tmp_path), "step/loss")
    assert [s for s, _ in again] == list(range(1, 9))
    assert again == first  # the same steps redone: the same values, each once
